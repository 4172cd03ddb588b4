import type { Keys } from './keys.js';
import { zsetWindow, type ScorePosition } from './zset-window.js';
import type { RedisClient, Scripts, ScriptReply } from './scripts.js';

/** What a ledger script answered: a kind (OK, REPLAY or an error code), server time, fields. */
export interface ScriptOutcome {
  kind: string;
  nowMs: number;
  fields: string[];
}

function outcome(reply: ScriptReply): ScriptOutcome {
  const [kind, now, ...rest] = reply;
  return { kind: String(kind), nowMs: Number(now), fields: rest.map((v) => (v === null ? '' : String(v))) };
}

export interface ReserveCall {
  tenantId: string;
  endpoint: 'reserve' | 'decide';
  mode: 'live' | 'dry';
  reservationId: string;
  payloadHash: string;
  idempotencyKey: string;
  estimate: number;
  unit: string;
  ttlMs: number | undefined;
  graceMs: number;
  overagePolicy: string | undefined;
  subjectJson: string;
  actionJson: string;
  metadataJson: string | undefined;
  scopes: string[];
  scopePath: string;
  minIdempotencyTtlMs: number;
  eventIdBase: string;
  requestId: string;
  traceId: string;
  actorJson: string;
}

export interface CommitCall {
  tenantId: string;
  reservationId: string;
  callerTenant: string;
  idempotencyKey: string;
  payloadHash: string;
  actual: number;
  unit: string;
  metadataJson: string | undefined;
  eventIdBase: string;
  requestId: string;
  traceId: string;
  actorJson: string;
}

export interface ReleaseCall {
  tenantId: string;
  reservationId: string;
  callerTenant: string;
  idempotencyKey: string;
  payloadHash: string;
  reason: string | undefined;
}

export interface ExtendCall {
  tenantId: string;
  reservationId: string;
  callerTenant: string;
  idempotencyKey: string;
  payloadHash: string;
  extendByMs: number;
}

export interface EventCall {
  tenantId: string;
  eventId: string;
  payloadHash: string;
  idempotencyKey: string;
  actual: number;
  unit: string;
  overagePolicy: string | undefined;
  scopes: string[];
  scopePath: string;
  eventIdBase: string;
  requestId: string;
  traceId: string;
  actorJson: string;
}

/** The stored reservation hash, as strings. */
export type ReservationRecord = Record<string, string>;

export interface BudgetRecord {
  [field: string]: string;
}

export const DEFAULT_MAX_EXTENSIONS = 10;
const DAY_MS = 86_400_000;

/** The runtime plane's store: one method per ledger script plus the indexed reads. */
export class RuntimeStore {
  constructor(
    readonly redis: RedisClient,
    readonly scripts: Scripts,
    readonly keys: Keys,
    readonly retentionMs: number,
  ) {}

  async reserve(c: ReserveCall): Promise<ScriptOutcome> {
    const k = this.keys;
    const t = c.tenantId;
    const keys = [
      k.tenant(t),
      k.idempotency(t, c.endpoint, c.idempotencyKey),
      k.reservation(t, c.reservationId),
      k.reservationIndex(t),
      k.expiryIndex(t),
      k.outbox(t),
      k.budgetUnits(t),
      ...c.scopes.map((s) => k.budget(t, s, c.unit)),
    ];
    const args = [
      c.reservationId, c.payloadHash, c.endpoint === 'decide' ? 'decide' : c.mode, String(c.estimate), c.unit,
      c.ttlMs === undefined ? '' : String(c.ttlMs), String(c.graceMs), c.overagePolicy ?? '',
      c.subjectJson, c.actionJson, c.metadataJson ?? '', c.scopePath, c.idempotencyKey,
      String(c.minIdempotencyTtlMs), c.eventIdBase, c.requestId, c.traceId, c.actorJson, t,
    ];
    return outcome(await this.scripts.run('reserve', keys, args));
  }

  async commit(c: CommitCall): Promise<ScriptOutcome> {
    const k = this.keys;
    const keys = [k.tenant(c.tenantId), k.reservation(c.tenantId, c.reservationId), k.expiryIndex(c.tenantId), k.outbox(c.tenantId)];
    const args = [
      c.callerTenant, c.idempotencyKey, c.payloadHash, String(c.actual), c.unit, c.metadataJson ?? '',
      c.eventIdBase, c.requestId, c.traceId, String(this.retentionMs), c.actorJson, c.reservationId,
    ];
    return outcome(await this.scripts.run('commit', keys, args));
  }

  async release(c: ReleaseCall): Promise<ScriptOutcome> {
    const k = this.keys;
    const keys = [k.tenant(c.tenantId), k.reservation(c.tenantId, c.reservationId), k.expiryIndex(c.tenantId), k.outbox(c.tenantId)];
    const args = [c.callerTenant, c.idempotencyKey, c.payloadHash, c.reason ?? '', String(this.retentionMs), c.reservationId];
    return outcome(await this.scripts.run('release', keys, args));
  }

  async extend(c: ExtendCall): Promise<ScriptOutcome> {
    const k = this.keys;
    const keys = [
      k.tenant(c.tenantId),
      k.reservation(c.tenantId, c.reservationId),
      k.expiryIndex(c.tenantId),
      k.idempotency(c.tenantId, 'extend', `${c.reservationId}:${c.idempotencyKey}`),
    ];
    const args = [c.callerTenant, c.payloadHash, String(c.extendByMs), c.reservationId, String(DEFAULT_MAX_EXTENSIONS), String(DAY_MS)];
    return outcome(await this.scripts.run('extend', keys, args));
  }

  async applyEvent(c: EventCall): Promise<ScriptOutcome> {
    const k = this.keys;
    const t = c.tenantId;
    const keys = [
      k.tenant(t),
      k.idempotency(t, 'event', c.idempotencyKey),
      k.outbox(t),
      k.budgetUnits(t),
      ...c.scopes.map((s) => k.budget(t, s, c.unit)),
    ];
    const args = [
      c.eventId, c.payloadHash, String(c.actual), c.unit, c.overagePolicy ?? '', c.scopePath, String(7 * DAY_MS),
      c.eventIdBase, c.requestId, c.traceId, c.actorJson, t,
    ];
    return outcome(await this.scripts.run('event', keys, args));
  }

  /** Whether any reservation of the tenant is past expires_at + grace (one cheap read). */
  async hasDue(tenantId: string, nowMs: number): Promise<boolean> {
    const due = await this.redis.zrangebyscore(this.keys.expiryIndex(tenantId), '-inf', nowMs - 1, 'LIMIT', 0, 1);
    return due.length > 0;
  }

  /** Expires due reservations of one tenant; returns how many expired and whether more are due. */
  async expireDue(tenantId: string, batchSize: number, eventIdBase: string): Promise<{ expired: number; more: boolean }> {
    const k = this.keys;
    // Finalized records expire after the retention period; their listing entries are trimmed
    // once the record is gone (ACTIVE records never expire, so they are never trimmed).
    const cutoff = Date.now() - this.retentionMs;
    const reply = await this.scripts.run(
      'expire',
      [k.tenant(tenantId), k.expiryIndex(tenantId), k.outbox(tenantId), k.reservationIndex(tenantId)],
      [String(batchSize), String(this.retentionMs), eventIdBase, '{"type":"system"}', tenantId, String(cutoff)],
    );
    return { expired: Number(reply[0]), more: Number(reply[1]) === 1 };
  }

  async getReservation(tenantId: string, reservationId: string): Promise<ReservationRecord | undefined> {
    const rec = await this.redis.hgetall(this.keys.reservation(tenantId, reservationId));
    return rec && Object.keys(rec).length > 0 ? rec : undefined;
  }

  async getReservations(tenantId: string, ids: string[]): Promise<Array<ReservationRecord | undefined>> {
    return Promise.all(ids.map((id) => this.getReservation(tenantId, id)));
  }

  /** Reservation id created with this idempotency key (live reserves only). */
  async reservationIdByKey(tenantId: string, idempotencyKey: string): Promise<string | undefined> {
    const rid = await this.redis.hget(this.keys.idempotency(tenantId, 'reserve', idempotencyKey), 'x');
    return rid ?? undefined;
  }

  /**
   * One window of the tenant's reservation index, newest first (or oldest first), strictly after
   * the (score, id) position of a cursor. Returns [id, created_at] pairs.
   */
  async reservationIndexWindow(
    tenantId: string,
    direction: 'desc' | 'asc',
    after: ScorePosition | undefined,
    count: number,
  ): Promise<Array<[string, number]>> {
    return zsetWindow(this.redis, this.keys.reservationIndex(tenantId), direction, after, count);
  }

  /** Budget index members ("scope|unit") after `afterMember`, in lexicographic order. */
  async budgetMembers(tenantId: string, afterMember: string | undefined, count: number): Promise<string[]> {
    const min = afterMember ? `(${afterMember}` : '-';
    return this.redis.zrangebylex(this.keys.budgetIndex(tenantId), min, '+', 'LIMIT', 0, count);
  }

  async getBudget(tenantId: string, scope: string, unit: string): Promise<BudgetRecord | undefined> {
    const rec = await this.redis.hgetall(this.keys.budget(tenantId, scope, unit));
    return rec && Object.keys(rec).length > 0 ? rec : undefined;
  }
}
