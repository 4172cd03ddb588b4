import type { Logger } from 'pino';
import type { AdminStore } from '../store/admin-store.js';
import type { RuntimeStore } from '../store/runtime-store.js';
import { newEventIdBase } from '../domain/ids.js';

/** Tenants read from the registry per round trip. */
const TENANT_PAGE = 500;
/** Batches one tenant may run in one tick before the sweep moves on (fairness bound). */
const MAX_BATCHES_PER_TENANT = 50;
/** Tenants swept concurrently; their calls share round trips through auto-pipelining. */
const SWEEP_CONCURRENCY = 32;

export interface SweepOptions {
  runtimeStore: RuntimeStore;
  adminStore: AdminStore;
  intervalMs: number;
  batchSize: number;
  logger: Logger;
  onExpired?: (count: number) => void;
  /** After each pass: records purged, and the largest purge lag of a tenant (seconds). */
  onPurged?: (count: number, lagSeconds: number) => void;
}

/**
 * The expiry sweep's pass: walks the tenant registry and runs the expire script per tenant until
 * nothing is due; the same script purges finalized reservations past the retention period. The
 * events service runs it as the `expiry` BullMQ job scheduler (every CYCLES_EXPIRY_INTERVAL_MS,
 * ADR 0014), so a tick runs once across all processes. Each script call is atomic and idempotent,
 * so overlapping passes cannot expire a reservation twice.
 */
export class ExpirySweep {
  private running: Promise<number> | undefined;

  constructor(private readonly opts: SweepOptions) {}

  /** Waits for a pass in progress (shutdown). */
  async stop(): Promise<void> {
    await this.running?.catch(() => undefined);
  }

  /** One full pass over all tenants; returns the number of reservations expired. */
  async sweepOnce(): Promise<number> {
    const pass = this.pass();
    this.running = pass;
    try {
      return await pass;
    } finally {
      if (this.running === pass) this.running = undefined;
    }
  }

  private async pass(): Promise<number> {
    let total = 0;
    let purged = 0;
    let lagMs = 0;
    const sweepTenant = async (tenantId: string): Promise<void> => {
      // A tenant with nothing to expire or purge costs two cheap reads, not a script call. The
      // server clock is close enough for this pre-check: the script decides with Redis time.
      const check = await this.opts.runtimeStore.sweepCheck(tenantId, Date.now());
      lagMs = Math.max(lagMs, check.purgeLagMs);
      if (!check.work) return;
      for (let batch = 0; batch < MAX_BATCHES_PER_TENANT; batch += 1) {
        const r = await this.opts.runtimeStore.expireDue(tenantId, this.opts.batchSize, newEventIdBase());
        total += r.expired;
        purged += r.purged;
        if (!r.more) break;
      }
    };
    for await (const tenants of this.opts.adminStore.tenantIdPages(TENANT_PAGE)) {
      let next = 0;
      const lane = async (): Promise<void> => {
        while (next < tenants.length) await sweepTenant(tenants[next++]!);
      };
      await Promise.all(Array.from({ length: Math.min(SWEEP_CONCURRENCY, tenants.length) }, lane));
    }
    if (total > 0) {
      this.opts.onExpired?.(total);
      this.opts.logger.info({ expired: total }, 'expired reservations');
    }
    this.opts.onPurged?.(purged, lagMs / 1000);
    if (purged > 0) this.opts.logger.debug({ purged }, 'purged finished reservations past retention');
    return total;
  }
}
