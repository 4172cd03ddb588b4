import { Worker, type Job } from 'bullmq';
import type { Logger } from 'pino';
import type { SecretCipher } from '../domain/webhooks.js';
import { SYSTEM_OWNER, ownerOfSubscriptionId } from '../domain/webhooks.js';
import type { EventsMetrics } from '../observability/events-metrics.js';
import type { PipelineStore } from '../store/pipeline-store.js';
import type { RedisClient, RedisSpec } from '../store/redis.js';
import type { Scripts } from '../store/scripts.js';
import { DeliveryProcessor, deliveryBackoff } from './delivery.js';
import type { ExpirySweep } from './expiry-sweep.js';
import { bullConnection, closeConnection, closeQueues, createQueues, enqueueDeliveries, enqueueRelay, enqueueRetry, queuePrefix, type Queues } from './queues.js';
import { Relay } from './relay.js';

export interface EventsServiceOptions {
  /** Where BullMQ and the outbox notifications connect (the process's Redis spec). */
  redis: RedisSpec | string;
  keyPrefix: string;
  logger: Logger;
  store: PipelineStore;
  scripts: Scripts;
  cipher: SecretCipher;
  sweep: ExpirySweep;
  metrics: EventsMetrics;
  eventTtlMs: number;
  deliveryTtlMs: number;
  maxDeliveryAgeMs: number;
  connectTimeoutMs: number;
  timeoutMs: number;
  expiryIntervalMs: number;
  reconcileIntervalMs: number;
  retentionIntervalMs: number;
  deliveryConcurrency: number;
  /** How long a worker's job lock lasts; a killed worker's job is retried after about this long. */
  lockDurationMs: number;
  /** Audit retention, so the retention job trims the audit indexes past it. */
  audit?: { retentionMs: number; unauthRetentionMs: number };
  /** Finishes tenant close cascades left unfinished (ADR 0015); returns how many were finished. */
  finishCascades?: () => Promise<number>;
  /** Moves reservations still in the layout before ADR 0019 (written by a process of the previous version). */
  migrateLayout?: () => Promise<number>;
}

/** Tenants read per registry page by the reconciliation and retention passes. */
const TENANT_PAGE = 500;
/** An outbox entry older than this with no relay running is picked up by reconciliation. */
const OUTBOX_PICKUP_AGE_MS = 2000;
/** Newest deliveries per subscription examined for a lost job. */
const STALE_SCAN_PER_SUBSCRIPTION = 200;
/** A PENDING delivery younger than this may simply not be enqueued yet (relay in progress). */
const STALE_DELIVERY_GRACE_MS = 30_000;
/** ACTIVE reservations above which a tenant's ledger audit is skipped (keeps the script short). */
const AUDIT_MAX_RESERVATIONS = 5000;

/**
 * The events service (`cycles events`, ADR 0014): BullMQ workers for the outbox relay, webhook
 * delivery, the expiry sweep, reconciliation and retention, plus a pub/sub listener that turns
 * outbox notifications into relay jobs. Any number of processes may run it: BullMQ hands each job
 * to one worker, job schedulers create each tick once, and every step is idempotent.
 */
export class EventsService {
  readonly queues: Queues;
  private readonly connection: RedisClient;
  private readonly workerConnections: RedisClient[] = [];
  private readonly workers: Worker[] = [];
  private notifier: RedisClient | undefined;
  private readonly relay: Relay;
  private readonly delivery: DeliveryProcessor;

  constructor(private readonly opts: EventsServiceOptions) {
    this.connection = bullConnection(opts.redis, 'cycles-events-queues');
    this.queues = createQueues(this.connection, opts.keyPrefix);
    this.relay = new Relay({
      store: opts.store,
      deliveries: this.queues.deliveries,
      eventTtlMs: opts.eventTtlMs,
      deliveryTtlMs: opts.deliveryTtlMs,
      logger: opts.logger,
      onRelayed: (events) => {
        const now = Date.now();
        for (const e of events) {
          opts.metrics.relayed.inc({ category: e.category });
          opts.metrics.relayLag.observe(Math.max(0, now - e.timestamp_ms) / 1000);
        }
      },
    });
    this.delivery = new DeliveryProcessor({
      store: opts.store,
      cipher: opts.cipher,
      maxDeliveryAgeMs: opts.maxDeliveryAgeMs,
      connectTimeoutMs: opts.connectTimeoutMs,
      timeoutMs: opts.timeoutMs,
      logger: opts.logger,
      metrics: opts.metrics,
    });
  }

  private worker(name: keyof Queues, processor: (job: Job) => Promise<unknown>, concurrency: number, extra: Record<string, unknown> = {}): Worker {
    const connection = bullConnection(this.opts.redis, `cycles-events-${name}`);
    this.workerConnections.push(connection);
    const w = new Worker(name, processor, {
      connection,
      prefix: queuePrefix(this.opts.keyPrefix),
      concurrency,
      lockDuration: this.opts.lockDurationMs,
      stalledInterval: Math.max(1000, Math.floor(this.opts.lockDurationMs / 2)),
      maxStalledCount: 5,
      ...extra,
    });
    w.on('error', (err) => this.opts.logger.warn({ queue: name, err: err.message }, 'queue worker error'));
    w.on('failed', (job, err) => {
      if (name === 'deliveries') return; // retries are the normal path; the record tells the story
      this.opts.logger.warn({ queue: name, job: job?.id, err: err.message }, 'job failed');
    });
    this.workers.push(w);
    return w;
  }

  async start(): Promise<void> {
    const { opts } = this;
    this.worker('relay', async (job) => {
      const tenantId = String((job.data as { tenantId: string }).tenantId);
      const { relayed, more } = await this.relay.relayTenant(tenantId);
      if (more) await enqueueRelay(this.queues.relay, tenantId);
      return relayed;
    }, 8);
    this.worker('deliveries', (job) => job.name === 'replay'
      ? this.delivery.processReplay(job, (d, delay) => enqueueRetry(this.queues.deliveries, d, delay))
      : this.delivery.process(job), opts.deliveryConcurrency, {
      settings: { backoffStrategy: deliveryBackoff },
    });
    this.worker('expiry', async () => opts.sweep.sweepOnce(), 1);
    this.worker('reconcile', async () => this.reconcileOnce(), 1);
    this.worker('retention', async () => this.retentionOnce(), 1);

    await this.queues.expiry.upsertJobScheduler('expiry-sweep', { every: opts.expiryIntervalMs }, {
      name: 'sweep', opts: { removeOnComplete: { count: 100 }, removeOnFail: { count: 100 } },
    });
    await this.queues.reconcile.upsertJobScheduler('reconcile', { every: opts.reconcileIntervalMs }, {
      name: 'reconcile', opts: { removeOnComplete: { count: 100 }, removeOnFail: { count: 100 } },
    });
    await this.queues.retention.upsertJobScheduler('retention', { every: opts.retentionIntervalMs }, {
      name: 'retention', opts: { removeOnComplete: { count: 100 }, removeOnFail: { count: 100 } },
    });

    const notifier = bullConnection(opts.redis, 'cycles-events-notify');
    this.notifier = notifier;
    notifier.on('message', (_channel: string, tenantId: string) => {
      enqueueRelay(this.queues.relay, tenantId).catch((err: Error) => opts.logger.warn({ err: err.message }, 'relay enqueue failed'));
    });
    // After (re)subscribing, outboxes that filled meanwhile are found by the reconciliation pass.
    notifier.on('ready', () => {
      this.pickUpOutboxes(0).catch(() => undefined);
    });
    await notifier.subscribe(opts.store.keys.outboxNotifyChannel());
    await this.pickUpOutboxes(0);
  }

  async stop(): Promise<void> {
    this.notifier?.disconnect();
    await Promise.all(this.workers.map((w) => w.close().catch(() => undefined)));
    await closeQueues(this.queues);
    await Promise.all([...this.workerConnections, this.connection].map((c) => closeConnection(c)));
  }

  async queueCounts(): Promise<Record<string, Record<string, number>>> {
    const out: Record<string, Record<string, number>> = {};
    for (const [name, q] of Object.entries(this.queues)) {
      out[name] = await q.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed', 'prioritized', 'paused');
    }
    return out;
  }

  /** Every tenant id in the registry, page by page, then `__system__`. */
  private async *tenants(): AsyncGenerator<string[]> {
    const { store } = this.opts;
    for (let offset = 0; ; offset += TENANT_PAGE) {
      const page = await store.redis.zrange(store.keys.tenantRegistry(), offset, offset + TENANT_PAGE - 1);
      if (page.length > 0) yield page;
      if (page.length < TENANT_PAGE) break;
    }
    yield [SYSTEM_OWNER];
  }

  /** Enqueues a relay for every outbox whose oldest entry is older than minAgeMs. */
  async pickUpOutboxes(minAgeMs: number): Promise<number> {
    let found = 0;
    const now = Date.now();
    for await (const page of this.tenants()) {
      const oldest = await Promise.all(page.map((t) => this.opts.store.oldestOutboxId(t)));
      for (let i = 0; i < page.length; i++) {
        const id = oldest[i];
        if (id === undefined) continue;
        if (now - Number(id.split('-')[0]) < minAgeMs) continue;
        found++;
        await enqueueRelay(this.queues.relay, page[i]!);
      }
    }
    return found;
  }

  /**
   * Finds deliveries left PENDING or RETRYING with no live job (a worker or relay crashed between
   * writing the record and enqueueing, or the job was removed) and enqueues them again; the
   * processor fails them as stale when they are past MAX_DELIVERY_AGE_MS.
   */
  async requeueLostDeliveries(): Promise<number> {
    const { store } = this.opts;
    const subs = await store.redis.zrange(store.keys.webhookRegistry(), 0, -1);
    let requeued = 0;
    const now = Date.now();
    for (const sub of subs) {
      const owner = ownerOfSubscriptionId(sub);
      if (owner === undefined) continue;
      const open = await store.openDeliveries(owner, sub, STALE_SCAN_PER_SUBSCRIPTION);
      for (const d of open) {
        if (now - Number(d.attempted_at_ms ?? now) < STALE_DELIVERY_GRACE_MS) continue;
        const job = await this.queues.deliveries.getJob(d.delivery_id!);
        const state = job ? await job.getState() : 'unknown';
        if (state === 'waiting' || state === 'active' || state === 'delayed' || state === 'prioritized' || state === 'waiting-children') continue;
        if (job) await job.remove().catch(() => undefined);
        await enqueueDeliveries(this.queues.deliveries, [{ owner, deliveryId: d.delivery_id!, subscriptionId: sub }]);
        requeued++;
      }
    }
    return requeued;
  }

  /** Ledger audit over every tenant; drift is logged and counted, never repaired here. */
  async auditLedgers(): Promise<{ drift: number; skipped: number }> {
    const { store, scripts, logger } = this.opts;
    const k = store.keys;
    let drift = 0;
    let skipped = 0;
    for await (const page of this.tenants()) {
      for (const t of page) {
        if (t === SYSTEM_OWNER) continue;
        const reply = await scripts.run('ledger-audit', [k.tenant(t), k.expiryIndex(t), k.budgetIndex(t), k.reservations(t)], [String(AUDIT_MAX_RESERVATIONS)]);
        if (reply[0] === 'SKIPPED') {
          skipped++;
          continue;
        }
        for (const row of reply.slice(2)) {
          const [scope, unit, kind, stored, expected] = String(row).split('|');
          drift++;
          logger.error({ tenant: t, scope, unit, kind, stored, expected }, 'ledger drift found by reconciliation; repair with POST /v1/admin/budgets/reconcile-reserved (see docs/operations.md, Reservation leaks)');
        }
      }
    }
    return { drift, skipped };
  }

  async reconcileOnce(): Promise<Record<string, number>> {
    const { metrics } = this.opts;
    const outboxes = await this.pickUpOutboxes(OUTBOX_PICKUP_AGE_MS);
    metrics.drift.set({ check: 'outbox_unrelayed' }, outboxes);
    if (outboxes > 0) metrics.reconciled.inc({ check: 'outbox_unrelayed', action: 'relay_enqueued' }, outboxes);
    const lost = await this.requeueLostDeliveries();
    metrics.drift.set({ check: 'delivery_without_job' }, lost);
    if (lost > 0) metrics.reconciled.inc({ check: 'delivery_without_job', action: 'requeued' }, lost);
    const cascades = this.opts.finishCascades ? await this.opts.finishCascades() : 0;
    metrics.drift.set({ check: 'tenant_close_cascade' }, cascades);
    if (cascades > 0) metrics.reconciled.inc({ check: 'tenant_close_cascade', action: 'finished' }, cascades);
    // Before the audit, so that reservations an old process wrote count with their holds.
    const legacy = this.opts.migrateLayout ? await this.opts.migrateLayout() : 0;
    metrics.drift.set({ check: 'legacy_reservation_layout' }, legacy);
    if (legacy > 0) metrics.reconciled.inc({ check: 'legacy_reservation_layout', action: 'migrated' }, legacy);
    const audit = await this.auditLedgers();
    metrics.drift.set({ check: 'ledger' }, audit.drift);
    if (audit.drift > 0) metrics.reconciled.inc({ check: 'ledger', action: 'reported' }, audit.drift);
    return { outboxes, lost, cascades, legacy, ledgerDrift: audit.drift, auditSkipped: audit.skipped };
  }

  /** Trims index entries older than their records' TTL (records expire by themselves). */
  async retentionOnce(): Promise<number> {
    const { store } = this.opts;
    const k = store.keys;
    const now = Date.now();
    const eventCutoff = now - this.opts.eventTtlMs;
    const deliveryCutoff = now - this.opts.deliveryTtlMs;
    let removed = Number(await store.redis.zremrangebyscore(k.allEvents(), '-inf', `(${eventCutoff}`));
    for await (const page of this.tenants()) {
      const counts = await Promise.all(page.map((t) => store.redis.zremrangebyscore(k.tenantEvents(t), '-inf', `(${eventCutoff}`)));
      removed += counts.reduce((a, b) => a + Number(b), 0);
    }
    const subs = await store.redis.zrange(k.webhookRegistry(), 0, -1);
    for (const sub of subs) {
      const owner = ownerOfSubscriptionId(sub);
      if (owner === undefined) continue;
      removed += Number(await store.redis.zremrangebyscore(k.subscriptionDeliveries(owner, sub), '-inf', `(${deliveryCutoff}`));
    }
    // Audit rows expire by TTL; their index entries are trimmed here (one index per tenant,
    // plus the cross-tenant, admin and unauthenticated ones).
    const audit = this.opts.audit;
    if (audit) {
      const trim = (index: string, retentionMs: number) => store.redis.zremrangebyscore(k.auditIndex(index), '-inf', `(${now - retentionMs}`);
      removed += Number(await trim('_all', audit.retentionMs));
      removed += Number(await trim('__admin__', audit.retentionMs));
      removed += Number(await trim('__unauth__', Math.min(audit.unauthRetentionMs, audit.retentionMs)));
      for await (const page of this.tenants()) {
        const counts = await Promise.all(page.map((t) => trim(t, audit.retentionMs)));
        removed += counts.reduce((a, b) => a + Number(b), 0);
      }
    }
    return removed;
  }
}
