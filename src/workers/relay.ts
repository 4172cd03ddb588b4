import type { Logger } from 'pino';
import type { Queue } from 'bullmq';
import {
  liveDeliveryId,
  parseOutboxEntry,
  routeFromRecord,
  subscriptionMatches,
  wireEvent,
  type OutboxEvent,
  type SubscriptionRoute,
} from '../domain/event-routing.js';
import { SYSTEM_OWNER } from '../domain/webhooks.js';
import type { NewDelivery, PipelineStore } from '../store/pipeline-store.js';
import { enqueueDeliveries, type DeliveryJobData } from './queues.js';

/** Outbox entries relayed per batch. */
const RELAY_BATCH = 200;
/** Batches one job relays before it yields (a follow-up job picks up the rest). */
const MAX_BATCHES_PER_JOB = 50;

export interface RelayOptions {
  store: PipelineStore;
  deliveries: Queue;
  eventTtlMs: number;
  deliveryTtlMs: number;
  logger: Logger;
  onRelayed?: (events: OutboxEvent[]) => void;
}

/**
 * The outbox relay (ADR 0014). For one tenant it repeats, batch by batch:
 *   1. read the oldest outbox entries (the stream is the write-ahead log: nothing is removed yet);
 *   2. store each as an Event with its indexes (SET NX / ZADD / SADD: repeatable);
 *   3. route it to the matching ACTIVE subscriptions of the tenant and of `__system__`, creating
 *      delivery records whose ids are derived from (event, subscription) (repeatable);
 *   4. enqueue one BullMQ job per PENDING delivery, job id = delivery id (repeatable);
 *   5. delete the entries from the outbox.
 * A crash anywhere before 5 makes the next run redo 2–4 with the same ids, so no event is lost
 * and none is stored or delivered twice.
 */
export class Relay {
  constructor(private readonly opts: RelayOptions) {}

  /** Relays a tenant's outbox until it is empty or the per-job bound is hit; returns events relayed. */
  async relayTenant(tenantId: string): Promise<{ relayed: number; more: boolean }> {
    let relayed = 0;
    for (let i = 0; i < MAX_BATCHES_PER_JOB; i++) {
      const n = await this.relayBatch(tenantId);
      relayed += n;
      if (n < RELAY_BATCH) return { relayed, more: false };
    }
    return { relayed, more: (await this.opts.store.outboxLength(tenantId)) > 0 };
  }

  async relayBatch(tenantId: string): Promise<number> {
    const { store, logger } = this.opts;
    const entries = await store.readOutbox(tenantId, RELAY_BATCH);
    if (entries.length === 0) return 0;
    const events: OutboxEvent[] = [];
    for (const entry of entries) {
      const e = parseOutboxEntry(entry.raw);
      if (e === undefined) logger.error({ tenant: tenantId, entry: entry.id }, 'outbox entry is not a valid event; dropped');
      else events.push(e);
    }
    await store.storeEvents(
      events.map((e) => ({
        id: e.event_id,
        tenantId: e.tenant_id,
        tsMs: e.timestamp_ms,
        json: JSON.stringify(wireEvent(e)),
        correlationId: e.correlation_id,
      })),
      this.opts.eventTtlMs,
    );
    const jobs = await this.fanOut(tenantId, events);
    await enqueueDeliveries(this.opts.deliveries, jobs);
    await store.ackOutbox(tenantId, entries.map((e) => e.id));
    this.opts.onRelayed?.(events);
    return entries.length;
  }

  private async fanOut(tenantId: string, events: OutboxEvent[]): Promise<DeliveryJobData[]> {
    if (events.length === 0) return [];
    const owners = tenantId === SYSTEM_OWNER ? [SYSTEM_OWNER] : [tenantId, SYSTEM_OWNER];
    const jobs: DeliveryJobData[] = [];
    const now = new Date();
    for (const owner of owners) {
      const routes = (await this.opts.store.subscriptions(owner))
        .map((rec) => routeFromRecord(owner, rec))
        .filter((r): r is SubscriptionRoute => r !== undefined && r.status === 'ACTIVE');
      if (routes.length === 0) continue;
      const wanted: NewDelivery[] = [];
      for (const e of events) {
        for (const sub of routes) {
          if (!subscriptionMatches(sub, e)) continue;
          wanted.push({
            deliveryId: liveDeliveryId(e.event_id, sub.subscription_id),
            subscriptionId: sub.subscription_id,
            eventId: e.event_id,
            eventType: e.event_type,
            tenantId: e.tenant_id,
            traceId: e.trace_id,
            traceFlags: e.trace_flags,
            inboundValid: e.traceparent_inbound_valid,
          });
        }
      }
      const statuses = await this.opts.store.createDeliveries(owner, wanted, this.opts.deliveryTtlMs, now);
      for (const d of wanted) {
        if (statuses.get(d.deliveryId) === 'PENDING') jobs.push({ owner, deliveryId: d.deliveryId, subscriptionId: d.subscriptionId });
      }
    }
    return jobs;
  }
}
