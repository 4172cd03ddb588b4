import type { RuntimeStore, ScriptOutcome, ReservationRecord } from '../store/runtime-store.js';
import { subjectIsDerivable } from '../store/reservation-codec.js';
import type { AuthContext, Correlation } from './auth.js';
import { actorJson, eventTraceId } from './auth.js';
import { payloadHash } from './canonical.js';
import { CyclesError, isErrorCode, type ErrorCode } from './errors.js';
import { newEventIdBase, newReservationShortId, parseReservationId, newId } from './ids.js';
import { deriveScopes, prefixesOf, leafOf, type SubjectLevels } from './scopes.js';
import type { Unit } from './amounts.js';

/**
 * The runtime plane's rules: everything between a validated request body and one ledger script,
 * and the mapping of the script's answer to the protocol's response or error.
 */

export interface AmountIn {
  unit: Unit;
  amount: number;
}

export interface ReserveInput {
  idempotency_key: string;
  subject: SubjectLevels & { dimensions?: Record<string, string> };
  action: { kind: string; name: string; tags?: string[] };
  estimate: AmountIn;
  ttl_ms?: number;
  grace_period_ms?: number;
  overage_policy?: string;
  dry_run?: boolean;
  metadata?: Record<string, unknown>;
}

export interface Observer {
  /** Called with the decision of every reserve/decide evaluation (metrics). */
  decision(operation: string, decision: string): void;
}

const DAY_MS = 86_400_000;
const DEFAULT_GRACE_MS = 5000;

const MESSAGES: Partial<Record<ErrorCode, string>> = {
  BUDGET_EXCEEDED: 'Insufficient remaining budget',
  BUDGET_FROZEN: 'Budget is frozen',
  BUDGET_CLOSED: 'Budget is closed',
  OVERDRAFT_LIMIT_EXCEEDED: 'Overdraft limit exceeded',
  DEBT_OUTSTANDING: 'Outstanding debt blocks new reservations',
  TENANT_CLOSED: 'Tenant is closed',
  IDEMPOTENCY_MISMATCH: 'Idempotency key was already used with a different request payload',
  RESERVATION_EXPIRED: 'Reservation has expired',
  RESERVATION_FINALIZED: 'Reservation is already finalized',
  MAX_EXTENSIONS_EXCEEDED: 'Maximum number of extensions reached',
  FORBIDDEN: 'Reservation belongs to another tenant',
  NOT_FOUND: 'Reservation not found',
};

/** Turns a script refusal into the protocol error it stands for. */
function refusal(o: ScriptOutcome, requestedUnit?: string): CyclesError {
  const code = o.kind;
  if (!isErrorCode(code)) return new CyclesError('INTERNAL_ERROR', 'Internal error');
  const [a = '', b = ''] = o.fields;
  switch (code) {
    case 'UNIT_MISMATCH':
      if (b) {
        return new CyclesError('UNIT_MISMATCH', `No budget in ${requestedUnit} at scope ${a}; budgets exist in ${b}`, {
          scope: a,
          requested_unit: requestedUnit,
          expected_units: b.split(','),
        });
      }
      return new CyclesError('UNIT_MISMATCH', `Unit ${requestedUnit} does not match the reservation's unit ${a}`, {
        requested_unit: requestedUnit,
        expected_units: [a],
      });
    case 'NOT_FOUND':
      return new CyclesError('NOT_FOUND', a ? `Budget not found for provided scope: ${a}` : 'Reservation not found');
    case 'BUDGET_EXCEEDED':
    case 'BUDGET_FROZEN':
    case 'BUDGET_CLOSED':
    case 'OVERDRAFT_LIMIT_EXCEEDED':
    case 'DEBT_OUTSTANDING':
      return new CyclesError(code, a ? `${MESSAGES[code]} at scope ${a}` : MESSAGES[code]!, a ? { scope: a } : undefined);
    case 'RESERVATION_FINALIZED':
      return new CyclesError(code, a ? `Reservation is already ${a}` : MESSAGES[code]!);
    case 'INTERNAL_ERROR':
      return new CyclesError('INTERNAL_ERROR', 'Internal error');
    case 'INVALID_REQUEST':
      return new CyclesError('INVALID_REQUEST', a || 'Invalid request');
    default:
      return new CyclesError(code, MESSAGES[code] ?? code);
  }
}

function tenantMustMatch(auth: AuthContext, subjectTenant: string | undefined): string {
  if (auth.kind !== 'tenant') throw new CyclesError('UNAUTHORIZED', 'Missing X-Cycles-API-Key header');
  if (subjectTenant !== undefined && subjectTenant !== auth.tenantId) {
    throw new CyclesError('FORBIDDEN', 'subject.tenant does not match the tenant of the API key');
  }
  return auth.tenantId;
}

function checkHeaderKey(headerKey: string | undefined, bodyKey: string): void {
  if (headerKey !== undefined && headerKey !== bodyKey) {
    throw new CyclesError('INVALID_REQUEST', 'X-Idempotency-Key header does not match idempotency_key in request body');
  }
}

/** The tenant that owns a reservation id and the record's short id inside it. */
function owner(reservationId: string): { tenantId: string; shortId: string } {
  const parsed = parseReservationId(reservationId);
  if (!parsed) throw new CyclesError('NOT_FOUND', 'Reservation not found');
  return { tenantId: parsed.tenant, shortId: parsed.short };
}

/** Draws for a fresh short id when the reserve script finds one already in use. */
const ID_ATTEMPTS = 3;

export class RuntimeService {
  constructor(
    private readonly store: RuntimeStore,
    private readonly observer: Observer = { decision: () => {} },
  ) {}

  async reserve(auth: AuthContext, body: ReserveInput, headerKey: string | undefined, corr: Correlation): Promise<Record<string, unknown>> {
    checkHeaderKey(headerKey, body.idempotency_key);
    const tenantId = tenantMustMatch(auth, body.subject.tenant);
    return this.evaluate(auth, tenantId, body, body.dry_run === true ? 'dry' : 'live', 'reserve', corr);
  }

  async decide(auth: AuthContext, body: ReserveInput, headerKey: string | undefined, corr: Correlation): Promise<Record<string, unknown>> {
    checkHeaderKey(headerKey, body.idempotency_key);
    const tenantId = tenantMustMatch(auth, body.subject.tenant);
    return this.evaluate(auth, tenantId, body, 'dry', 'decide', corr);
  }

  private async evaluate(
    auth: AuthContext,
    tenantId: string,
    body: ReserveInput,
    mode: 'live' | 'dry',
    endpoint: 'reserve' | 'decide',
    corr: Correlation,
  ): Promise<Record<string, unknown>> {
    const { scopes, scopePath } = deriveScopes(body.subject, tenantId);
    const hashed = endpoint === 'reserve' ? { ...body, dry_run: body.dry_run === true } : body;
    const call = {
      tenantId,
      endpoint,
      mode,
      shortId: newReservationShortId(),
      payloadHash: payloadHash(hashed),
      idempotencyKey: body.idempotency_key,
      estimate: body.estimate.amount,
      unit: body.estimate.unit,
      ttlMs: body.ttl_ms,
      graceMs: body.grace_period_ms ?? DEFAULT_GRACE_MS,
      overagePolicy: body.overage_policy,
      subjectJson: JSON.stringify(body.subject),
      storeSubject: !subjectIsDerivable(body.subject as Record<string, unknown>, scopePath),
      actionJson: JSON.stringify(body.action),
      metadataJson: body.metadata === undefined ? undefined : JSON.stringify(body.metadata),
      scopes,
      scopePath,
      minIdempotencyTtlMs: DAY_MS,
      eventIdBase: newEventIdBase(),
      requestId: corr.requestId,
      traceId: eventTraceId(corr),
      actorJson: actorJson(auth),
    };
    let o = await this.store.reserve(call);
    for (let attempt = 1; o.kind === 'ID_COLLISION' && attempt < ID_ATTEMPTS; attempt += 1) {
      o = await this.store.reserve({ ...call, shortId: newReservationShortId() });
    }
    const operation = endpoint === 'decide' ? 'decide' : mode === 'dry' ? 'reserve_dry_run' : 'reserve';
    if (o.kind !== 'OK' && o.kind !== 'REPLAY') {
      if (o.kind !== 'IDEMPOTENCY_MISMATCH' && o.kind !== 'UNIT_MISMATCH') this.observer.decision(operation, 'DENY');
      throw refusal(o, body.estimate.unit);
    }
    const affected = prefixesOf(scopePath);
    const [decision = 'DENY', second = '', third = '', , status = ''] = o.fields;
    if (o.kind === 'OK') this.observer.decision(operation, decision);

    if (endpoint === 'decide') {
      const out: Record<string, unknown> = { decision };
      if (decision === 'DENY') out.reason_code = second;
      out.affected_scopes = affected;
      return out;
    }
    if (mode === 'dry' || second === '-' || decision === 'DENY') {
      const out: Record<string, unknown> = { decision };
      if (decision !== 'DENY') out.reserved = { unit: body.estimate.unit, amount: body.estimate.amount };
      if (decision === 'DENY') out.reason_code = second;
      out.scope_path = scopePath;
      out.affected_scopes = affected;
      return out;
    }
    // Live ALLOW (fresh or replayed): fields are decision, reservation id, expires_at, created_at.
    const expiresAt = Number(third);
    const active = o.kind === 'OK' || status === 'ACTIVE';
    return {
      decision,
      reservation_id: second,
      reserved: { unit: body.estimate.unit, amount: body.estimate.amount },
      expires_at_ms: expiresAt,
      remaining_ttl_ms: active ? Math.max(0, expiresAt - o.nowMs) : 0,
      scope_path: scopePath,
      affected_scopes: affected,
    };
  }

  async commit(
    auth: AuthContext,
    reservationId: string,
    body: { idempotency_key: string; actual: AmountIn; metrics?: unknown; metadata?: Record<string, unknown> },
    headerKey: string | undefined,
    corr: Correlation,
  ): Promise<Record<string, unknown>> {
    checkHeaderKey(headerKey, body.idempotency_key);
    if (auth.kind !== 'tenant') throw new CyclesError('UNAUTHORIZED', 'Missing X-Cycles-API-Key header');
    const o = await this.store.commit({
      ...owner(reservationId),
      callerTenant: auth.tenantId,
      idempotencyKey: body.idempotency_key,
      payloadHash: payloadHash(body),
      actual: body.actual.amount,
      unit: body.actual.unit,
      metadataJson: body.metadata === undefined ? undefined : JSON.stringify(body.metadata),
      eventIdBase: newEventIdBase(),
      requestId: corr.requestId,
      traceId: eventTraceId(corr),
      actorJson: actorJson(auth),
    });
    if (o.kind !== 'OK' && o.kind !== 'REPLAY') throw refusal(o, body.actual.unit);
    const charged = Number(o.fields[0]);
    const released = Number(o.fields[1]);
    const out: Record<string, unknown> = { status: 'COMMITTED', charged: { unit: body.actual.unit, amount: charged } };
    if (released > 0) out.released = { unit: body.actual.unit, amount: released };
    return out;
  }

  async release(
    auth: AuthContext,
    reservationId: string,
    body: { idempotency_key: string; reason?: string },
    headerKey: string | undefined,
  ): Promise<{ body: Record<string, unknown>; tenantId: string; replay: boolean }> {
    checkHeaderKey(headerKey, body.idempotency_key);
    const { tenantId, shortId } = owner(reservationId);
    const o = await this.store.release({
      tenantId,
      shortId,
      callerTenant: auth.kind === 'tenant' ? auth.tenantId : '',
      idempotencyKey: body.idempotency_key,
      payloadHash: payloadHash(body),
      reason: body.reason,
    });
    if (o.kind !== 'OK' && o.kind !== 'REPLAY') throw refusal(o);
    return {
      body: { status: 'RELEASED', released: { unit: o.fields[1], amount: Number(o.fields[0]) } },
      tenantId,
      replay: o.kind === 'REPLAY',
    };
  }

  async extend(
    auth: AuthContext,
    reservationId: string,
    body: { idempotency_key: string; extend_by_ms: number; metadata?: Record<string, unknown> },
    headerKey: string | undefined,
  ): Promise<Record<string, unknown>> {
    checkHeaderKey(headerKey, body.idempotency_key);
    if (auth.kind !== 'tenant') throw new CyclesError('UNAUTHORIZED', 'Missing X-Cycles-API-Key header');
    const o = await this.store.extend({
      ...owner(reservationId),
      reservationId,
      callerTenant: auth.tenantId,
      idempotencyKey: body.idempotency_key,
      payloadHash: payloadHash(body),
      extendByMs: body.extend_by_ms,
    });
    if (o.kind !== 'OK' && o.kind !== 'REPLAY') throw refusal(o);
    const expiresAt = Number(o.fields[0]);
    const active = o.fields[1] === 'ACTIVE';
    return { status: 'ACTIVE', expires_at_ms: expiresAt, remaining_ttl_ms: active ? Math.max(0, expiresAt - o.nowMs) : 0 };
  }

  async createEvent(
    auth: AuthContext,
    body: {
      idempotency_key: string;
      subject: SubjectLevels;
      actual: AmountIn;
      overage_policy?: string;
    } & Record<string, unknown>,
    headerKey: string | undefined,
    corr: Correlation,
  ): Promise<Record<string, unknown>> {
    checkHeaderKey(headerKey, body.idempotency_key);
    const tenantId = tenantMustMatch(auth, body.subject.tenant);
    const { scopes, scopePath } = deriveScopes(body.subject, tenantId);
    const o = await this.store.applyEvent({
      tenantId,
      eventId: newId('evt', 12),
      payloadHash: payloadHash(body),
      idempotencyKey: body.idempotency_key,
      actual: body.actual.amount,
      unit: body.actual.unit,
      overagePolicy: body.overage_policy,
      scopes,
      scopePath,
      eventIdBase: newEventIdBase(),
      requestId: corr.requestId,
      traceId: eventTraceId(corr),
      actorJson: actorJson(auth),
    });
    if (o.kind !== 'OK' && o.kind !== 'REPLAY') throw refusal(o, body.actual.unit);
    const charged = Number(o.fields[1]);
    const out: Record<string, unknown> = { status: 'APPLIED', event_id: o.fields[0] };
    if (charged < body.actual.amount) out.charged = { unit: body.actual.unit, amount: charged };
    return out;
  }

  // ---------------------------------------------------------------------------- reads

  async getReservation(auth: AuthContext, reservationId: string): Promise<Record<string, unknown>> {
    const { tenantId, shortId } = owner(reservationId);
    const rec = await this.store.getReservation(tenantId, shortId);
    if (!rec) throw new CyclesError('NOT_FOUND', 'Reservation not found');
    if (auth.kind === 'tenant' && rec.tenant !== auth.tenantId) {
      throw new CyclesError('FORBIDDEN', 'Reservation belongs to another tenant');
    }
    if (rec.status === 'EXPIRED') throw new CyclesError('RESERVATION_EXPIRED', 'Reservation has expired');
    return reservationView(reservationId, rec, { metadata: true, committedMetadata: true });
  }
}

/** ReservationDetail / ReservationSummary from the stored record. */
export function reservationView(
  reservationId: string,
  rec: ReservationRecord,
  include: { metadata: boolean; committedMetadata: boolean },
): Record<string, unknown> {
  const unit = rec.unit ?? 'USD_MICROCENTS';
  const out: Record<string, unknown> = {
    reservation_id: reservationId,
    status: rec.status,
  };
  if (rec.idem) out.idempotency_key = rec.idem;
  out.subject = JSON.parse(rec.subject ?? '{}');
  out.action = JSON.parse(rec.action ?? '{}');
  out.reserved = { unit, amount: Number(rec.estimate) };
  if (rec.status === 'COMMITTED') out.committed = { unit, amount: Number(rec.committed) };
  out.created_at_ms = Number(rec.created);
  out.expires_at_ms = Number(rec.expires);
  if ((rec.status === 'COMMITTED' || rec.status === 'RELEASED') && rec.finalized) out.finalized_at_ms = Number(rec.finalized);
  out.scope_path = rec.scope_path;
  out.affected_scopes = prefixesOf(rec.scope_path ?? '');
  if (include.metadata && rec.meta) out.metadata = JSON.parse(rec.meta);
  if (include.committedMetadata && rec.cmeta) out.committed_metadata = JSON.parse(rec.cmeta);
  return out;
}

/** Balance from a stored ledger hash. remaining is derived, so the invariant holds exactly. */
export function balanceView(rec: Record<string, string>): Record<string, unknown> {
  const unit = rec.unit!;
  const allocated = Number(rec.allocated ?? 0);
  const spent = Number(rec.spent ?? 0);
  const reserved = Number(rec.reserved ?? 0);
  const debt = Number(rec.debt ?? 0);
  const amount = (n: number) => ({ unit, amount: n });
  return {
    scope: leafOf(rec.scope!),
    scope_path: rec.scope,
    remaining: amount(allocated - spent - reserved - debt),
    reserved: amount(reserved),
    spent: amount(spent),
    allocated: amount(allocated),
    debt: amount(debt),
    overdraft_limit: amount(Number(rec.overdraft_limit ?? 0)),
    is_over_limit: rec.over_limit === '1',
  };
}
