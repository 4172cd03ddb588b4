import type { Keys } from './keys.js';
import { decodeReservation, idempotencyField } from './reservation-codec.js';
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
  /** Short id of the reservation a live reserve creates (the random tail of its id). */
  shortId: string;
  payloadHash: string;
  idempotencyKey: string;
  estimate: number;
  unit: string;
  ttlMs: number | undefined;
  graceMs: number;
  overagePolicy: string | undefined;
  subjectJson: string;
  /** Whether the record must keep the subject (it cannot be rebuilt from the scope path). */
  storeSubject: boolean;
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
  shortId: string;
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
  shortId: string;
  callerTenant: string;
  idempotencyKey: string;
  payloadHash: string;
  reason: string | undefined;
}

export interface ExtendCall {
  tenantId: string;
  shortId: string;
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
/** The shortest idempotency window of a reserve (and the lower bound of a record's life). */
const DAY_MS = 86_400_000;
/** Log entries the purge examines per expire call, per reservation the call may expire. */
const PURGE_SCAN_FACTOR = 4;

/** The runtime plane's store: one method per ledger script plus the indexed reads. */
export class RuntimeStore {
  constructor(
    readonly redis: RedisClient,
    readonly scripts: Scripts,
    readonly keys: Keys,
    readonly retentionMs: number,
    /** A live reserve's record is kept at least this long after its creation (replay window). */
    readonly minReplayWindowMs: number = DAY_MS,
  ) {}

  async reserve(c: ReserveCall): Promise<ScriptOutcome> {
    const k = this.keys;
    const t = c.tenantId;
    const keys = [
      k.tenant(t),
      k.idempotency(t, c.endpoint, c.idempotencyKey),
      k.reservations(t),
      k.reservationLog(t),
      k.expiryIndex(t),
      k.outbox(t),
      k.budgetUnits(t),
      k.reserveIdempotencyIndex(t),
      ...c.scopes.map((s) => k.budget(t, s, c.unit)),
    ];
    const args = [
      c.shortId, c.payloadHash, c.endpoint === 'decide' ? 'decide' : c.mode, String(c.estimate), c.unit,
      c.ttlMs === undefined ? '' : String(c.ttlMs), String(c.graceMs), c.overagePolicy ?? '',
      c.subjectJson, c.actionJson, c.metadataJson ?? '', c.scopePath, c.idempotencyKey,
      String(c.minIdempotencyTtlMs), c.eventIdBase, c.requestId, c.traceId, c.actorJson, t, c.storeSubject ? '1' : '',
      idempotencyField(c.idempotencyKey),
    ];
    return outcome(await this.scripts.run('reserve', keys, args));
  }

  async commit(c: CommitCall): Promise<ScriptOutcome> {
    const k = this.keys;
    const keys = [k.tenant(c.tenantId), k.reservations(c.tenantId), k.expiryIndex(c.tenantId), k.outbox(c.tenantId)];
    const args = [
      c.callerTenant, c.idempotencyKey, c.payloadHash, String(c.actual), c.unit, c.metadataJson ?? '',
      c.eventIdBase, c.requestId, c.traceId, c.actorJson, c.shortId,
    ];
    return outcome(await this.scripts.run('commit', keys, args));
  }

  async release(c: ReleaseCall): Promise<ScriptOutcome> {
    const k = this.keys;
    const keys = [k.tenant(c.tenantId), k.reservations(c.tenantId), k.expiryIndex(c.tenantId), k.outbox(c.tenantId)];
    const args = [c.callerTenant, c.idempotencyKey, c.payloadHash, c.reason ?? '', c.shortId];
    return outcome(await this.scripts.run('release', keys, args));
  }

  async extend(c: ExtendCall): Promise<ScriptOutcome> {
    const k = this.keys;
    const keys = [
      k.tenant(c.tenantId),
      k.reservations(c.tenantId),
      k.expiryIndex(c.tenantId),
      k.idempotency(c.tenantId, 'extend', `${c.reservationId}:${c.idempotencyKey}`),
    ];
    const args = [c.callerTenant, c.payloadHash, String(c.extendByMs), c.shortId, String(DEFAULT_MAX_EXTENSIONS), String(DAY_MS)];
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

  /**
   * Whether the expire script has work for the tenant: a reservation past expires_at + grace, or
   * a reservation log entry older than the retention period and 24 h (a record the purge may
   * remove). Two cheap reads, sent together. `purgeLagMs` is how far past that age the oldest
   * log entry is (0 when none is): it stays below the longest reservation life while the purge
   * keeps up, and grows when it does not.
   */
  async sweepCheck(tenantId: string, nowMs: number): Promise<{ work: boolean; purgeLagMs: number }> {
    const cutoff = Math.max(0, nowMs - Math.max(this.retentionMs, this.minReplayWindowMs) - 1);
    const [due, old] = await Promise.all([
      this.redis.zrangebyscore(this.keys.expiryIndex(tenantId), '-inf', nowMs - 1, 'LIMIT', 0, 1),
      this.redis.xrange(this.keys.reservationLog(tenantId), '-', String(cutoff), 'COUNT', 1),
    ]);
    const oldest = old[0] ? Number(old[0][0].split('-')[0]) : undefined;
    return { work: due.length > 0 || oldest !== undefined, purgeLagMs: oldest === undefined ? 0 : cutoff - oldest };
  }

  /**
   * Expires due reservations of one tenant and purges finalized records past the retention period
   * (ADR 0019); returns how many expired and were purged, and whether more work is waiting.
   */
  async expireDue(tenantId: string, batchSize: number, eventIdBase: string): Promise<{ expired: number; purged: number; more: boolean }> {
    const k = this.keys;
    const t = tenantId;
    const reply = await this.scripts.run(
      'expire',
      [k.tenant(t), k.expiryIndex(t), k.outbox(t), k.reservations(t), k.reservationLog(t), k.reserveIdempotencyIndex(t), k.reservationPurgeCursor(t)],
      [String(batchSize), String(this.retentionMs), eventIdBase, '{"type":"system"}', t, String(batchSize * PURGE_SCAN_FACTOR), String(this.minReplayWindowMs)],
    );
    return { expired: Number(reply[0]), more: Number(reply[1]) === 1, purged: Number(reply[2]) };
  }

  /** The stored record of a reservation, decoded (see reservation-codec.ts). */
  async getReservation(tenantId: string, shortId: string): Promise<ReservationRecord | undefined> {
    const value = await this.redis.hgetBuffer(this.keys.reservations(tenantId), shortId);
    return value ? decodeReservation(tenantId, value) : undefined;
  }

  async getReservations(tenantId: string, shortIds: string[]): Promise<Array<ReservationRecord | undefined>> {
    if (shortIds.length === 0) return [];
    const values = await this.redis.hmgetBuffer(this.keys.reservations(tenantId), ...shortIds);
    return values.map((v) => (v ? decodeReservation(tenantId, v) : undefined));
  }

  /** Short id of the live reservation created with this idempotency key, if it is still kept. */
  async reservationIdByKey(tenantId: string, idempotencyKey: string): Promise<string | undefined> {
    const short = await this.redis.hget(this.keys.reserveIdempotencyIndex(tenantId), idempotencyField(idempotencyKey));
    return short ?? undefined;
  }

  /**
   * One window of the tenant's reservation log, newest first, strictly before the log entry id
   * of a cursor. Returns [short id, log entry id] pairs.
   */
  async reservationLogWindow(tenantId: string, before: string | undefined, count: number): Promise<Array<[string, string]>> {
    const entries = (await this.redis.xrevrange(this.keys.reservationLog(tenantId), before ? `(${before}` : '+', '-', 'COUNT', count)) as Array<
      [string, string[]]
    >;
    return entries.map(([id, fields]) => [fields[1]!, id]);
  }

  /**
   * Moves one batch of a tenant's reservations from the layout before ADR 0019 to records;
   * returns how many moved and how many are left. Safe to run concurrently and repeatedly.
   */
  async migrateLegacyReservations(tenantId: string, batchSize: number): Promise<{ moved: number; left: number }> {
    const k = this.keys;
    const t = tenantId;
    const reply = await this.scripts.run(
      'migrate-reservations',
      [k.tenant(t), k.legacyReservationIndex(t), k.reservations(t), k.reservationLog(t), k.expiryIndex(t), k.reserveIdempotencyIndex(t)],
      [String(batchSize)],
    );
    return { moved: Number(reply[0]), left: Number(reply[1]) };
  }

  /** Whether the tenant still has reservations in the layout before ADR 0019. */
  async hasLegacyReservations(tenantId: string): Promise<boolean> {
    return (await this.redis.exists(this.keys.legacyReservationIndex(tenantId))) === 1;
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
