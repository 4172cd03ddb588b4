import type { Keys } from './keys.js';
import type { RedisClient, Scripts } from './scripts.js';

/**
 * Writes of the events pipeline (ADR 0014): the relay moves outbox entries into stored events
 * and delivery records, the delivery worker records attempts. Every write here is idempotent
 * (SET NX, ZADD, SADD, deterministic delivery ids), so a relay that crashes anywhere and runs
 * again produces the same result; the outbox entry is deleted only after all of it succeeded.
 */

export interface OutboxEntry {
  id: string;
  raw: string;
}

/** One delivery to create: the script's 8-field group. */
export interface NewDelivery {
  deliveryId: string;
  subscriptionId: string;
  eventId: string;
  eventType: string;
  tenantId: string;
  traceId?: string | undefined;
  traceFlags?: string | undefined;
  inboundValid?: boolean | undefined;
}

export type AttemptOutcome = 'SUCCESS' | 'RETRY' | 'FAIL' | 'FAIL_UPSTREAM';

export interface AttemptRecord {
  outcome: AttemptOutcome;
  attempted: boolean;
  nowIso: string;
  responseStatus?: number | undefined;
  responseTimeMs?: number | undefined;
  errorMessage?: string | undefined;
  nextRetryAtIso?: string | undefined;
  traceId?: string | undefined;
  eventIdBase: string;
  deliveryTraceId: string;
}

export type AttemptReply =
  | { kind: 'MISSING' }
  | { kind: 'TERMINAL'; status: string }
  | { kind: 'RECORDED'; status: string; attempts: number; disabled: boolean };

const SUB_ROUTE_FIELDS = ['subscription_id', 'status', 'event_types', 'event_categories', 'scope_filter'] as const;

export class PipelineStore {
  constructor(
    readonly redis: RedisClient,
    private readonly scripts: Scripts,
    readonly keys: Keys,
  ) {}

  async readOutbox(tenantId: string, count: number): Promise<OutboxEntry[]> {
    const rows = (await this.redis.xrange(this.keys.outbox(tenantId), '-', '+', 'COUNT', count)) as [string, string[]][];
    const out: OutboxEntry[] = [];
    for (const [id, fields] of rows) {
      const i = fields.indexOf('event');
      out.push({ id, raw: i >= 0 ? (fields[i + 1] ?? '') : '' });
    }
    return out;
  }

  async outboxLength(tenantId: string): Promise<number> {
    return this.redis.xlen(this.keys.outbox(tenantId));
  }

  /** The id of the oldest waiting entry (its first part is the append time in ms), or undefined. */
  async oldestOutboxId(tenantId: string): Promise<string | undefined> {
    const rows = (await this.redis.xrange(this.keys.outbox(tenantId), '-', '+', 'COUNT', 1)) as [string, string[]][];
    return rows[0]?.[0];
  }

  async ackOutbox(tenantId: string, ids: string[]): Promise<void> {
    if (ids.length > 0) await this.redis.xdel(this.keys.outbox(tenantId), ...ids);
  }

  /**
   * Stores events and their indexes. SET NX keeps the first copy if an id is ever seen twice;
   * the indexes are sets, so repeating a batch changes nothing.
   */
  async storeEvents(events: { id: string; tenantId: string; tsMs: number; json: string; correlationId?: string | undefined }[], ttlMs: number): Promise<void> {
    const k = this.keys;
    const ops: Promise<unknown>[] = [];
    for (const e of events) {
      ops.push(this.redis.set(k.event(e.id), e.json, 'PX', ttlMs, 'NX'));
      ops.push(this.redis.zadd(k.tenantEvents(e.tenantId), e.tsMs, e.id));
      ops.push(this.redis.zadd(k.allEvents(), e.tsMs, e.id));
      if (e.correlationId) {
        ops.push(this.redis.sadd(k.eventCorrelation(e.correlationId), e.id));
        ops.push(this.redis.pexpire(k.eventCorrelation(e.correlationId), ttlMs));
      }
    }
    await Promise.all(ops);
  }

  /** Routing fields of every subscription an owner has (owners have few; __system__ a few dozen). */
  async subscriptions(ownerId: string): Promise<Record<string, string>[]> {
    const ids = await this.redis.zrange(this.keys.webhookIndex(ownerId), 0, -1);
    const rows = await Promise.all(ids.map((id) => this.redis.hmget(this.keys.webhook(ownerId, id), ...SUB_ROUTE_FIELDS)));
    const out: Record<string, string>[] = [];
    for (const row of rows) {
      const rec: Record<string, string> = {};
      SUB_ROUTE_FIELDS.forEach((f, i) => {
        const v = row[i];
        if (v !== null && v !== undefined) rec[f] = v;
      });
      if (rec.subscription_id) out.push(rec);
    }
    return out;
  }

  /** Creates delivery records (idempotent); returns each delivery id with its status after the call. */
  async createDeliveries(ownerId: string, deliveries: NewDelivery[], ttlMs: number, now: Date): Promise<Map<string, string>> {
    const result = new Map<string, string>();
    if (deliveries.length === 0) return result;
    const args: string[] = [this.keys.tenantPrefix(ownerId), String(ttlMs), now.toISOString(), String(now.getTime())];
    for (const d of deliveries) {
      args.push(d.deliveryId, d.subscriptionId, d.eventId, d.eventType, d.tenantId, d.traceId ?? '', d.traceFlags ?? '',
        d.inboundValid === undefined ? '' : String(d.inboundValid));
    }
    const reply = await this.scripts.run('delivery-create', [this.keys.webhookIndex(ownerId)], args);
    for (let i = 0; i + 1 < reply.length; i += 2) result.set(String(reply[i]), String(reply[i + 1]));
    return result;
  }

  async delivery(ownerId: string, deliveryId: string): Promise<Record<string, string> | undefined> {
    const rec = await this.redis.hgetall(this.keys.delivery(ownerId, deliveryId));
    return Object.keys(rec).length > 0 ? rec : undefined;
  }

  async event(eventId: string): Promise<string | undefined> {
    return (await this.redis.get(this.keys.event(eventId))) ?? undefined;
  }

  async subscription(ownerId: string, subscriptionId: string): Promise<Record<string, string> | undefined> {
    const rec = await this.redis.hgetall(this.keys.webhook(ownerId, subscriptionId));
    return Object.keys(rec).length > 0 ? rec : undefined;
  }

  async recordAttempt(ownerId: string, subscriptionId: string, deliveryId: string, r: AttemptRecord): Promise<AttemptReply> {
    const k = this.keys;
    const reply = await this.scripts.run(
      'delivery-result',
      [k.delivery(ownerId, deliveryId), k.webhook(ownerId, subscriptionId), k.outbox(ownerId)],
      [
        r.outcome, r.attempted ? '1' : '0', r.nowIso,
        r.responseStatus === undefined ? '' : String(r.responseStatus),
        r.responseTimeMs === undefined ? '' : String(r.responseTimeMs),
        r.errorMessage ?? '', r.nextRetryAtIso ?? '', r.traceId ?? '',
        r.eventIdBase, ownerId, r.deliveryTraceId, '{"type":"system"}',
      ],
    );
    const first = String(reply[0]);
    if (first === 'MISSING') return { kind: 'MISSING' };
    if (first === 'TERMINAL') return { kind: 'TERMINAL', status: String(reply[1]) };
    return { kind: 'RECORDED', status: first, attempts: Number(reply[1]), disabled: reply[2] === 'DISABLED' };
  }

  /** Sets one budget's `reserved` to the sum of its ACTIVE holds (explicit repair; ledger-repair.lua). */
  async repairReserved(tenantId: string, scope: string, unit: string, maxReservations: number): Promise<
    { result: 'OK'; before: number; after: number } | { result: 'BUDGET_NOT_FOUND' } | { result: 'SKIPPED'; count: number }
  > {
    const k = this.keys;
    const reply = await this.scripts.run('ledger-repair', [k.tenant(tenantId), k.expiryIndex(tenantId), k.budget(tenantId, scope, unit), k.reservations(tenantId)], [scope, unit, String(maxReservations)]);
    if (reply[0] === 'OK') return { result: 'OK', before: Number(reply[1]), after: Number(reply[2]) };
    if (reply[0] === 'SKIPPED') return { result: 'SKIPPED', count: Number(reply[1]) };
    return { result: 'BUDGET_NOT_FOUND' };
  }

  /** Deliveries of one subscription still waiting (PENDING/RETRYING), newest first, bounded. */
  async openDeliveries(ownerId: string, subscriptionId: string, max: number): Promise<Record<string, string>[]> {
    const ids = await this.redis.zrevrange(this.keys.subscriptionDeliveries(ownerId, subscriptionId), 0, max - 1);
    const recs = await Promise.all(ids.map((id) => this.delivery(ownerId, id)));
    return recs.filter((r): r is Record<string, string> => r !== undefined && (r.status === 'PENDING' || r.status === 'RETRYING'));
  }
}
