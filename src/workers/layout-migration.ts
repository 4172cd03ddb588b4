import type { Logger } from 'pino';
import type { AdminStore } from '../store/admin-store.js';
import type { RuntimeStore } from '../store/runtime-store.js';

/** Tenants read from the registry per round trip. */
const TENANT_PAGE = 500;
/** Reservations moved per script call (each call holds Redis for about a millisecond). */
const MIGRATION_BATCH = 200;

/**
 * Moves every tenant's reservations from the layout before ADR 0019 (one hash per reservation)
 * to records, at start, before the process serves. Each script call moves whole reservations and
 * is safe to repeat, so processes starting together, or a start interrupted half-way, only share
 * or resume the work. Returns the number of tenants touched and reservations moved.
 */
export async function migrateReservationLayout(
  runtime: RuntimeStore,
  admin: AdminStore,
  logger: Logger,
): Promise<{ tenants: number; moved: number }> {
  let tenants = 0;
  let moved = 0;
  for await (const page of admin.tenantIdPages(TENANT_PAGE)) {
    const legacy = await Promise.all(page.map((t) => runtime.hasLegacyReservations(t)));
    for (const [i, tenantId] of page.entries()) {
      if (!legacy[i]) continue;
      tenants += 1;
      for (;;) {
        const step = await runtime.migrateLegacyReservations(tenantId, MIGRATION_BATCH);
        moved += step.moved;
        if (step.left === 0) break;
      }
      logger.info({ tenant: tenantId }, 'reservations moved to the record layout (ADR 0019)');
    }
  }
  if (tenants > 0) logger.warn({ tenants, reservations: moved }, 'reservation layout migration finished (ADR 0019)');
  return { tenants, moved };
}
