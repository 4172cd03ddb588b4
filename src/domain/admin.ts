import { randomBytes } from 'node:crypto';
import type { AdminStore, EmitContext, RecordFields } from '../store/admin-store.js';
import type { AuthContext, Correlation } from './auth.js';
import { actorJson } from './auth.js';
import { hashSecret } from './authenticator.js';
import { payloadHash } from './canonical.js';
import { CyclesError } from './errors.js';
import { newEventIdBase, newId } from './ids.js';
import { parseBudgetScope } from './scopes.js';
import { balanceView } from './runtime.js';
import { MAX_AMOUNT } from './amounts.js';

/** Governance-plane rules for tenants, API keys and budgets (admin digest §2–§4). */

export const PERMISSIONS = [
  'reservations:create', 'reservations:commit', 'reservations:release', 'reservations:extend', 'reservations:list',
  'balances:read', 'budgets:read', 'budgets:write', 'policies:read', 'policies:write', 'webhooks:read',
  'webhooks:write', 'events:read', 'admin:read', 'admin:write', 'admin:tenants:read', 'admin:tenants:write',
  'admin:budgets:read', 'admin:budgets:write', 'admin:policies:read', 'admin:policies:write',
  'admin:apikeys:read', 'admin:apikeys:write', 'admin:webhooks:read', 'admin:webhooks:write',
  'admin:events:read', 'admin:audit:read',
] as const;

/** The spec's default set when a key is created without permissions. */
export const DEFAULT_PERMISSIONS = [
  'reservations:create', 'reservations:commit', 'reservations:release', 'reservations:extend', 'reservations:list',
  'balances:read', 'budgets:read', 'budgets:write', 'policies:read', 'policies:write',
];

const DEFAULT_KEY_LIFETIME_MS = 90 * 86_400_000;

// Tenant close cascade (admin digest §6, ADR 0015).
/** Children (reservations, budgets, subscriptions) one cascade batch examines in one script call. */
export const CASCADE_BATCH_SIZE = 100;
/** Largest batch a caller may ask for: a batch is one script call and must stay short. */
const CASCADE_MAX_BATCH_SIZE = 1000;
/** Batches one cascade run may take; a run that hits the bound reports itself incomplete. */
export const CASCADE_MAX_BATCHES = 10_000;
/** API key ids read per SSCAN page, and pages one run may read. */
const CASCADE_KEY_PAGE = 100;
const CASCADE_MAX_KEY_PAGES = 10_000;
/** Retention of the reservation records the cascade releases, unless the caller passes its own. */
/** The revoked_reason the cascade stamps on API keys; it also marks a revocation as the cascade's own. */
export const CASCADE_REVOKED_REASON = 'tenant_closed';
/** Tenant runtime defaults (admin digest §2.1); the runtime scripts fall back to the same values. */
const TENANT_DEFAULTS = { default_reservation_ttl_ms: 60_000, max_reservation_ttl_ms: 3_600_000, max_reservation_extensions: 10 } as const;
const TENANT_NUMERIC = ['default_reservation_ttl_ms', 'max_reservation_ttl_ms', 'max_reservation_extensions'] as const;
const TENANT_STRINGS = ['parent_tenant_id', 'default_commit_overage_policy', 'reservation_expiry_policy'] as const;

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function isoFromStored(v: string | undefined): string | undefined {
  if (!v) return undefined;
  return /^\d+$/.test(v) ? iso(Number(v)) : v;
}

function emitCtx(auth: AuthContext, corr: Correlation): EmitContext {
  return {
    eventIdBase: newEventIdBase(), requestId: corr.requestId, traceId: corr.traceId, actorJson: actorJson(auth),
    ...(corr.correlationId ? { correlationId: corr.correlationId } : {}),
  };
}

export function tenantView(rec: RecordFields): Record<string, unknown> {
  const out: Record<string, unknown> = { tenant_id: rec.tenant_id, name: rec.name, status: rec.status };
  for (const f of TENANT_STRINGS) if (rec[f]) out[f] = rec[f];
  for (const f of TENANT_NUMERIC) if (rec[f] !== undefined && rec[f] !== '') out[f] = Number(rec[f]);
  if (rec.metadata) out.metadata = JSON.parse(rec.metadata);
  for (const f of ['created_at', 'updated_at', 'suspended_at', 'closed_at']) if (rec[f]) out[f] = isoFromStored(rec[f]);
  return out;
}

export function ledgerView(rec: RecordFields): Record<string, unknown> {
  const b = balanceView(rec);
  const out: Record<string, unknown> = {
    ledger_id: rec.ledger_id,
    tenant_id: rec.tenant_id,
    scope: rec.scope,
    unit: rec.unit,
    allocated: b.allocated,
    remaining: b.remaining,
    reserved: b.reserved,
    spent: b.spent,
    debt: b.debt,
    overdraft_limit: b.overdraft_limit,
    is_over_limit: b.is_over_limit,
    status: rec.status,
  };
  if (rec.commit_overage_policy) out.commit_overage_policy = rec.commit_overage_policy;
  if (rec.rollover_policy) out.rollover_policy = rec.rollover_policy;
  if (rec.period_start) out.period_start = rec.period_start;
  if (rec.period_end) out.period_end = rec.period_end;
  out.created_at = isoFromStored(rec.created_at);
  if (rec.updated_at) out.updated_at = isoFromStored(rec.updated_at);
  return out;
}

export function apiKeyView(rec: RecordFields): Record<string, unknown> {
  const out: Record<string, unknown> = {
    key_id: rec.key_id,
    tenant_id: rec.tenant_id,
    key_prefix: rec.key_prefix,
    name: rec.name,
  };
  if (rec.description) out.description = rec.description;
  out.permissions = JSON.parse(rec.permissions ?? '[]');
  const sf = JSON.parse(rec.scope_filter ?? '[]') as string[];
  if (sf.length > 0) out.scope_filter = sf;
  out.status = rec.status;
  out.created_at = rec.created_at;
  out.expires_at = rec.expires_at;
  if (rec.revoked_at) out.revoked_at = rec.revoked_at;
  if (rec.revoked_reason) out.revoked_reason = rec.revoked_reason;
  if (rec.metadata) out.metadata = JSON.parse(rec.metadata);
  return out;
}

/** The protocol error for a refusal answered by a budget script. */
function budgetRefusal(kind: string | undefined, detail: string | undefined, tenant: string, scope: string, unit: string): CyclesError {
  switch (kind) {
    case 'TENANT_CLOSED':
      return new CyclesError('TENANT_CLOSED', `Tenant is CLOSED: ${tenant}`);
    case 'BUDGET_NOT_FOUND':
      return new CyclesError('BUDGET_NOT_FOUND', `Budget not found for scope ${scope} and unit ${unit}`);
    case 'BUDGET_FROZEN':
      return new CyclesError('BUDGET_FROZEN', 'Budget is frozen');
    case 'BUDGET_CLOSED':
      return new CyclesError('BUDGET_CLOSED', 'Budget is closed');
    case 'BUDGET_EXCEEDED':
      return new CyclesError('BUDGET_EXCEEDED', 'Insufficient funds');
    case 'IDEMPOTENCY_MISMATCH':
      return new CyclesError('IDEMPOTENCY_MISMATCH', 'Idempotency key was already used with a different request payload');
    case 'INVALID_TRANSITION':
      // The reference answers an invalid freeze/unfreeze transition with 409 INVALID_REQUEST.
      return new CyclesError('INVALID_REQUEST', detail ?? 'Invalid status transition', undefined, 409);
    default:
      return new CyclesError('INVALID_REQUEST', detail || 'Invalid request');
  }
}

/** One owned object a cascade run moved to its terminal state. */
export interface CascadeChange {
  kind: 'budget' | 'webhook_subscription' | 'api_key';
  /** ledger_id, subscription_id or key_id. */
  id: string;
  priorStatus: string;
  newStatus: string;
  scope?: string;
  unit?: string;
  name?: string;
  /** Budgets: the reserved amount returned to remaining when the ledger closed (0 if none). */
  releasedAmount?: number;
}

/** What one cascade run did. */
export interface CascadeReport {
  /** The correlation id of the close that started the cascade, stamped on every child event. */
  correlationId: string;
  /** Children this run transitioned (children already terminal are not listed). */
  changes: CascadeChange[];
  /** False when the run stopped at its bound; the next close (or a reconciler) finishes it. */
  complete: boolean;
}

export interface CascadeOptions {
  /** Children per batch (1..1000); default CASCADE_BATCH_SIZE. */
  batchSize?: number;
  /** Batches this run may take; default CASCADE_MAX_BATCHES. */
  maxBatches?: number;
}

function parseCascadeChange(raw: string): CascadeChange {
  const c = JSON.parse(raw) as { kind: CascadeChange['kind']; id: string; prior: string; new: string; scope?: string; unit?: string; name?: string; released?: string };
  const out: CascadeChange = { kind: c.kind, id: c.id, priorStatus: c.prior, newStatus: c.new };
  if (c.scope !== undefined) out.scope = c.scope;
  if (c.unit !== undefined) out.unit = c.unit;
  if (c.name !== undefined) out.name = c.name;
  if (c.released !== undefined) out.releasedAmount = Number(c.released);
  return out;
}

function scopeOrThrow(scope: string): { scope: string; tenant: string } {
  const parsed = parseBudgetScope(scope);
  if ('error' in parsed) throw new CyclesError('INVALID_REQUEST', `Invalid scope: ${parsed.error}`);
  return parsed;
}

export class AdminService {
  constructor(private readonly store: AdminStore) {}

  // ------------------------------------------------------------------------ tenants

  async createTenant(auth: AuthContext, body: Record<string, unknown>, corr: Correlation): Promise<{ created: boolean; tenant: Record<string, unknown> }> {
    const tenantId = String(body.tenant_id);
    const name = String(body.name);
    if (name.trim() === '') throw new CyclesError('INVALID_REQUEST', 'Validation failed: body/name must not be blank');
    const now = Date.now();
    const fields: RecordFields = {
      tenant_id: tenantId,
      name,
      status: 'ACTIVE',
      created_at: iso(now),
      default_commit_overage_policy: String(body.default_commit_overage_policy ?? 'ALLOW_IF_AVAILABLE'),
      // The documented defaults are stored, so the record says what the runtime applies.
      default_reservation_ttl_ms: String(TENANT_DEFAULTS.default_reservation_ttl_ms),
      max_reservation_ttl_ms: String(TENANT_DEFAULTS.max_reservation_ttl_ms),
      max_reservation_extensions: String(TENANT_DEFAULTS.max_reservation_extensions),
    };
    for (const f of [...TENANT_STRINGS, ...TENANT_NUMERIC]) if (body[f] !== undefined) fields[f] = String(body[f]);
    if (body.metadata !== undefined) fields.metadata = JSON.stringify(body.metadata);
    const result = await this.store.createTenant(tenantId, name, fields, now, emitCtx(auth, corr));
    if (result === 'DUPLICATE_RESOURCE') throw new CyclesError('DUPLICATE_RESOURCE', `Tenant exists: ${tenantId}`);
    const rec = await this.store.getTenant(tenantId);
    return { created: result === 'CREATED', tenant: tenantView(rec ?? fields) };
  }

  async getTenant(tenantId: string): Promise<Record<string, unknown>> {
    const rec = await this.store.getTenant(tenantId);
    if (!rec) throw new CyclesError('TENANT_NOT_FOUND', `Tenant not found: ${tenantId}`);
    return tenantView(rec);
  }

  async updateTenant(
    auth: AuthContext,
    tenantId: string,
    body: Record<string, unknown>,
    corr: Correlation,
    opts: CascadeOptions = {},
  ): Promise<Record<string, unknown>> {
    return (await this.patchTenant(auth, tenantId, body, corr, opts)).tenant;
  }

  /**
   * PATCH of a tenant. `status: CLOSED` flips the tenant first (the commit point: from then on
   * every mutation of its objects is refused) and then runs the close cascade over its children,
   * Mode B of the admin digest §6 (ADR 0015). A re-close of a CLOSED tenant runs the cascade
   * again, which finishes whatever an interrupted run left and emits nothing twice.
   *
   * Correlation ids: the children's events carry `tenant_close_cascade:<tenant>:<request_id>` of
   * the close that flipped the tenant; the tenant.closed event carries the caller's correlation
   * id when it has one (a bulk CLOSE), else the same cascade id.
   */
  async patchTenant(
    auth: AuthContext,
    tenantId: string,
    body: Record<string, unknown>,
    corr: Correlation,
    opts: CascadeOptions = {},
  ): Promise<{ tenant: Record<string, unknown>; cascade?: CascadeReport }> {
    const set: RecordFields = {};
    if (body.name !== undefined) set.name = String(body.name);
    for (const f of ['default_commit_overage_policy', ...TENANT_NUMERIC] as const) if (body[f] !== undefined) set[f] = String(body[f]);
    if (body.metadata !== undefined) set.metadata = JSON.stringify(body.metadata);
    const status = body.status === undefined ? undefined : String(body.status);
    const closing = status === 'CLOSED';
    const cascadeCorrelation = `tenant_close_cascade:${tenantId}:${corr.requestId}`;
    const eventCorr = closing ? { ...corr, correlationId: corr.correlationId ?? cascadeCorrelation } : corr;
    // The intent is noted before the flip, so a crash right after the flip still leaves the
    // tenant findable by whoever finishes unfinished cascades.
    if (closing) await this.store.markCascadePending(tenantId, Date.now());
    const r = await this.store.updateTenant(tenantId, status, iso(Date.now()), set, [], emitCtx(auth, eventCorr), closing ? cascadeCorrelation : '');
    if (r.result !== 'OK' && closing) await this.store.clearCascadePending(tenantId);
    if (r.result === 'TENANT_NOT_FOUND') throw new CyclesError('TENANT_NOT_FOUND', `Tenant not found: ${tenantId}`);
    if (r.result === 'INVALID_REQUEST') throw new CyclesError('INVALID_REQUEST', r.detail);
    let cascade: CascadeReport | undefined;
    if (closing) {
      try {
        cascade = await this.runCloseCascade(auth, tenantId, corr, opts);
      } catch (err) {
        if (err instanceof CyclesError) throw err;
        throw new CyclesError('INTERNAL_ERROR', 'Tenant closed, but one or more owned resources did not reach terminal state');
      }
    }
    return { tenant: await this.getTenant(tenantId), ...(cascade ? { cascade } : {}) };
  }

  /**
   * Runs the close cascade of a CLOSED tenant to completion (or to its bound): bounded batches
   * over reservations, budgets and webhook subscriptions in the tenant's slot, then the API keys
   * (global records) one by one. Every step is a compare-and-set that emits only when it moves a
   * child, so runs may repeat, overlap or resume after a crash without duplicate events. Also the
   * entry point for an operator or a reconciler finishing an interrupted cascade.
   */
  async runCloseCascade(auth: AuthContext, tenantId: string, corr: Correlation, opts: CascadeOptions = {}): Promise<CascadeReport> {
    const batchSize = Math.min(CASCADE_MAX_BATCH_SIZE, Math.max(1, Math.floor(opts.batchSize ?? CASCADE_BATCH_SIZE)));
    const maxBatches = opts.maxBatches ?? CASCADE_MAX_BATCHES;
    const changes: CascadeChange[] = [];
    let budgetCursor = '';
    let webhookCursor = '';
    let complete = false;
    for (let i = 0; i < maxBatches; i += 1) {
      const r = await this.store.cascadeBatch({
        tenantId, batchSize, budgetCursor, webhookCursor, nowIso: iso(Date.now()),
        emit: emitCtx(auth, corr),
      });
      if (r.result === 'NOT_CLOSED') throw new CyclesError('INVALID_REQUEST', `Tenant is not CLOSED: ${tenantId}`);
      for (const raw of r.changes) changes.push(parseCascadeChange(raw));
      budgetCursor = r.budgetCursor;
      webhookCursor = r.webhookCursor;
      if (r.result === 'DONE') {
        complete = true;
        break;
      }
    }
    if (complete) complete = await this.cascadeApiKeys(auth, tenantId, corr, changes);
    if (complete) await this.store.markCascadeDone(tenantId, Date.now());
    const state = await this.store.cascadeState(tenantId);
    return { correlationId: state?.correlation_id ?? '', changes, complete };
  }

  /** The cascade over the tenant's API keys; false when the page bound stopped it. */
  private async cascadeApiKeys(auth: AuthContext, tenantId: string, corr: Correlation, changes: CascadeChange[]): Promise<boolean> {
    let cursor = '0';
    for (let page = 0; page < CASCADE_MAX_KEY_PAGES; page += 1) {
      const [next, ids] = await this.store.tenantKeyIdsPage(tenantId, cursor, CASCADE_KEY_PAGE);
      for (const keyId of ids) {
        const change = await this.cascadeApiKey(auth, tenantId, keyId, corr);
        if (change) changes.push(change);
      }
      if (next === '0') return true;
      cursor = next;
    }
    return false;
  }

  /**
   * One key: claim (tenant slot) → revoke (the key's own slot) → finish (tenant slot). The
   * event is emitted by the finish step, once, and only for a revocation that is the cascade's
   * own (it revoked the key now, or an earlier interrupted run did: revoked_reason tenant_closed).
   */
  private async cascadeApiKey(auth: AuthContext, tenantId: string, keyId: string, corr: Correlation): Promise<CascadeChange | undefined> {
    const rec = await this.store.getApiKey(keyId);
    if (rec && rec.tenant_id !== tenantId) return undefined;
    const name = rec?.name ?? '';
    const claim = await this.store.cascadeKeyStep(tenantId, 'claim', keyId, rec?.status ?? '', name, emitCtx(auth, corr));
    if (claim === 'NOT_CLOSED') throw new CyclesError('INVALID_REQUEST', `Tenant is not CLOSED: ${tenantId}`);
    if (claim !== 'CLAIMED' && claim !== 'PENDING') return undefined;
    const revoked = await this.store.cascadeRevokeKey(keyId, tenantId, iso(Date.now()), CASCADE_REVOKED_REASON);
    const ours = revoked.result === 'OK' || (revoked.result === 'ALREADY' && revoked.status === 'REVOKED' && revoked.reason === CASCADE_REVOKED_REASON);
    const finish = await this.store.cascadeKeyStep(tenantId, 'finish', keyId, ours ? '1' : '0', name, emitCtx(auth, corr));
    if (finish !== 'EMITTED') return undefined;
    return { kind: 'api_key', id: keyId, priorStatus: 'ACTIVE', newStatus: 'REVOKED', ...(name ? { name } : {}) };
  }

  // ------------------------------------------------------------------------ API keys

  /** Emits an api_key.* event (admin digest §5.6: created, revoked, permissions_changed). */
  async emitApiKeyEvent(
    ctx: { auth: AuthContext; corr: Correlation } | undefined,
    tenantId: string,
    type: 'api_key.created' | 'api_key.revoked' | 'api_key.permissions_changed',
    data: Record<string, unknown>,
  ): Promise<void> {
    if (!ctx || !tenantId) return;
    await this.store.appendEvent(tenantId, { type, category: 'api_key', source: 'cycles-admin', dataJson: JSON.stringify(data) }, emitCtx(ctx.auth, ctx.corr));
  }

  async createApiKey(body: Record<string, unknown>, ctx?: { auth: AuthContext; corr: Correlation }): Promise<Record<string, unknown>> {
    const tenantId = String(body.tenant_id);
    const tenant = await this.store.getTenant(tenantId);
    if (!tenant) throw new CyclesError('TENANT_NOT_FOUND', `Tenant not found: ${tenantId}`);
    if (tenant.status === 'CLOSED') throw new CyclesError('TENANT_CLOSED', `Tenant is CLOSED: ${tenantId}`);
    if (tenant.status === 'SUSPENDED') throw new CyclesError('INVALID_REQUEST', `Tenant is SUSPENDED: ${tenantId}`);
    const permissions = (body.permissions as string[] | undefined) ?? DEFAULT_PERMISSIONS;
    for (const p of permissions) {
      if (!(PERMISSIONS as readonly string[]).includes(p)) throw new CyclesError('INVALID_REQUEST', `Unrecognized permission: ${p}`);
    }
    const now = Date.now();
    let expiresAt = iso(now + DEFAULT_KEY_LIFETIME_MS);
    if (body.expires_at !== undefined) {
      const ms = Date.parse(String(body.expires_at));
      if (Number.isNaN(ms)) throw new CyclesError('INVALID_REQUEST', 'Validation failed: body/expires_at must be a date-time');
      expiresAt = iso(ms);
    }
    const secret = `cyc_live_${randomBytes(24).toString('base64url')}`;
    const keyId = newId('key', 8);
    const fields: RecordFields = {
      key_prefix: secret.slice(0, 14),
      name: String(body.name),
      permissions: JSON.stringify([...new Set(permissions)]),
      scope_filter: JSON.stringify(body.scope_filter ?? []),
      status: 'ACTIVE',
      created_at: iso(now),
      expires_at: expiresAt,
    };
    if (body.description !== undefined) fields.description = String(body.description);
    if (body.metadata !== undefined) fields.metadata = JSON.stringify(body.metadata);
    await this.store.createApiKey(keyId, tenantId, hashSecret(secret), fields);
    // The status check above and the writes are separate steps: a close that landed in between
    // would leave a live key under a CLOSED tenant, so the new key is revoked and refused.
    if ((await this.store.getTenant(tenantId))?.status === 'CLOSED') {
      await this.store.cascadeRevokeKey(keyId, tenantId, iso(Date.now()), CASCADE_REVOKED_REASON);
      throw new CyclesError('TENANT_CLOSED', `Tenant is CLOSED: ${tenantId}`);
    }
    await this.emitApiKeyEvent(ctx, tenantId, 'api_key.created', {
      key_id: keyId, key_name: fields.name, new_status: 'ACTIVE', permissions: JSON.parse(fields.permissions!),
    });
    return {
      key_id: keyId,
      key_secret: secret,
      key_prefix: fields.key_prefix,
      tenant_id: tenantId,
      permissions: JSON.parse(fields.permissions!),
      created_at: fields.created_at,
      expires_at: expiresAt,
    };
  }

  async revokeApiKey(keyId: string, reason: string | undefined, ctx?: { auth: AuthContext; corr: Correlation }): Promise<Record<string, unknown>> {
    const rec = await this.store.getApiKey(keyId);
    if (!rec) throw new CyclesError('NOT_FOUND', `API key not found: ${keyId}`);
    // A closed owner wins over the key's own state (tenant-close Rule 2): a key the cascade
    // revoked answers TENANT_CLOSED, not the revoked-key conflict.
    const tenant = rec.tenant_id ? await this.store.getTenant(rec.tenant_id) : undefined;
    if (tenant?.status === 'CLOSED') throw new CyclesError('TENANT_CLOSED', `Tenant is CLOSED: ${rec.tenant_id}`);
    if (rec.status === 'REVOKED') throw new CyclesError('KEY_REVOKED', `API key is already revoked: ${keyId}`);
    const fields: RecordFields = { status: 'REVOKED', revoked_at: iso(Date.now()) };
    if (reason) fields.revoked_reason = reason;
    await this.store.revokeApiKey(keyId, fields);
    await this.emitApiKeyEvent(ctx, rec.tenant_id ?? '', 'api_key.revoked', {
      key_id: keyId, ...(rec.name ? { key_name: rec.name } : {}), previous_status: rec.status ?? 'ACTIVE', new_status: 'REVOKED',
    });
    return apiKeyView({ ...rec, ...fields });
  }

  // ------------------------------------------------------------------------ budgets

  /** Resolves the tenant a budget call acts for: the key's own, or `tenant_id` under the admin key. */
  private budgetTenant(auth: AuthContext, tenantParam: string | undefined, scopeTenant: string, required: boolean): string {
    if (auth.kind === 'tenant') {
      if (scopeTenant !== auth.tenantId) throw new CyclesError('FORBIDDEN', `Scope tenant '${scopeTenant}' does not match the API key's tenant`);
      return auth.tenantId;
    }
    if (tenantParam === undefined || tenantParam === '') {
      if (required) throw new CyclesError('INVALID_REQUEST', 'tenant_id is required when using admin key authentication');
      return scopeTenant;
    }
    if (tenantParam !== scopeTenant) {
      throw new CyclesError('INVALID_REQUEST', `Scope tenant '${scopeTenant}' does not match request tenant_id '${tenantParam}'`);
    }
    return tenantParam;
  }

  async createBudget(auth: AuthContext, body: Record<string, unknown>, corr: Correlation): Promise<Record<string, unknown>> {
    if (auth.kind === 'tenant' && body.tenant_id !== undefined) {
      throw new CyclesError('INVALID_REQUEST', 'tenant_id must not be sent with a tenant API key');
    }
    const { scope, tenant } = scopeOrThrow(String(body.scope));
    // A scope rooted in another tenant is an invalid request here (reference ScopeValidator).
    if (auth.kind === 'tenant' && tenant !== auth.tenantId) {
      throw new CyclesError('INVALID_REQUEST', `Scope tenant '${tenant}' does not match the API key's tenant '${auth.tenantId}'`);
    }
    const tenantId = this.budgetTenant(auth, body.tenant_id as string | undefined, tenant, true);
    const unit = String(body.unit);
    const allocated = body.allocated as { unit: string; amount: number };
    const overdraft = body.overdraft_limit as { unit: string; amount: number } | undefined;
    if (allocated.unit !== unit || (overdraft && overdraft.unit !== unit)) {
      throw new CyclesError('UNIT_MISMATCH', `Amount unit must equal the budget unit ${unit}`);
    }
    const now = Date.now();
    const extra: RecordFields = { ledger_id: newId('led', 8), tenant_id: tenantId, created_at: String(now), updated_at: String(now) };
    for (const f of ['commit_overage_policy', 'rollover_policy', 'period_start', 'period_end'] as const) {
      if (body[f] !== undefined) extra[f] = String(body[f]);
    }
    if (body.metadata !== undefined) extra.metadata = JSON.stringify(body.metadata);
    const r = await this.store.createBudget(tenantId, scope, unit, allocated.amount, overdraft?.amount ?? 0, extra, emitCtx(auth, corr));
    switch (r.result) {
      case 'CREATED':
        break;
      case 'TENANT_NOT_FOUND':
        throw new CyclesError('TENANT_NOT_FOUND', `Tenant not found: ${tenantId}`);
      case 'TENANT_CLOSED':
        throw new CyclesError('TENANT_CLOSED', `Tenant is CLOSED: ${tenantId}`);
      case 'DUPLICATE_RESOURCE':
        throw new CyclesError('DUPLICATE_RESOURCE', `Budget exists for scope ${scope} and unit ${unit}`);
      default:
        throw new CyclesError('INVALID_REQUEST', r.detail || 'Budget could not be created');
    }
    return this.lookupBudget(auth, scope, unit);
  }

  async lookupBudget(auth: AuthContext, rawScope: string, unit: string): Promise<Record<string, unknown>> {
    const { scope, tenant } = scopeOrThrow(rawScope);
    if (auth.kind === 'tenant' && tenant !== auth.tenantId) throw new CyclesError('FORBIDDEN', 'Budget belongs to another tenant');
    const rec = await this.store.getBudget(tenant, scope, unit);
    if (!rec) throw new CyclesError('BUDGET_NOT_FOUND', `Budget not found for scope ${scope} and unit ${unit}`);
    return ledgerView(rec);
  }

  async fundBudget(
    auth: AuthContext,
    q: { scope: string; unit: string; tenant_id?: string },
    body: { operation: string; amount: { unit: string; amount: number }; spent?: { unit: string; amount: number }; reason?: string; idempotency_key?: string },
    corr: Correlation,
  ): Promise<Record<string, unknown>> {
    const { scope, tenant } = scopeOrThrow(q.scope);
    if (auth.kind === 'admin' && (q.tenant_id === undefined || q.tenant_id === '')) {
      throw new CyclesError('INVALID_REQUEST', 'tenant_id query parameter is required when using admin key authentication');
    }
    if (auth.kind === 'admin' && q.tenant_id !== tenant) throw new CyclesError('FORBIDDEN', 'Budget does not belong to tenant_id');
    const tenantId = this.budgetTenant(auth, undefined, tenant, false);
    if (body.amount.unit !== q.unit || (body.spent && body.spent.unit !== q.unit)) {
      throw new CyclesError('UNIT_MISMATCH', `Amount unit must equal the budget unit ${q.unit}`);
    }
    if (body.spent !== undefined && body.operation !== 'RESET_SPENT') {
      throw new CyclesError('INVALID_REQUEST', 'spent is only accepted with operation RESET_SPENT');
    }
    const now = Date.now();
    const r = await this.store.fundBudget({
      tenantId,
      scope,
      unit: q.unit,
      operation: body.operation,
      amount: body.amount.amount,
      spentOverride: body.spent?.amount,
      payloadHash: payloadHash({ body, scope, unit: q.unit }),
      idempotencyKey: body.idempotency_key,
      reason: body.reason,
      nowMs: now,
      emit: emitCtx(auth, corr),
    });
    if (r[0] !== 'OK' && r[0] !== 'REPLAY') throw budgetRefusal(r[0], r[1], tenantId, scope, q.unit);
    const [, pa, na, pr, nr, pd, nd, ps, ns] = r.map(Number);
    const amt = (n: number | undefined) => ({ unit: q.unit, amount: n ?? 0 });
    return {
      operation: body.operation,
      previous_allocated: amt(pa),
      new_allocated: amt(na),
      previous_remaining: amt(pr),
      new_remaining: amt(nr),
      previous_debt: amt(pd),
      new_debt: amt(nd),
      previous_spent: amt(ps),
      new_spent: amt(ns),
      timestamp: iso(now),
    };
  }

  async setBudgetStatus(auth: AuthContext, q: { scope: string; unit: string }, target: 'FROZEN' | 'ACTIVE', reason: string | undefined, corr: Correlation): Promise<Record<string, unknown>> {
    const { scope, tenant } = scopeOrThrow(q.scope);
    const r = await this.store.setBudgetStatus(tenant, scope, q.unit, target, reason, Date.now(), emitCtx(auth, corr));
    if (r[0] !== 'OK') throw budgetRefusal(r[0], r[1], tenant, scope, q.unit);
    return this.lookupBudget(auth, scope, q.unit);
  }

  async updateBudget(auth: AuthContext, q: { scope: string; unit: string }, body: Record<string, unknown>, corr: Correlation): Promise<Record<string, unknown>> {
    const { scope, tenant } = scopeOrThrow(q.scope);
    const overdraft = body.overdraft_limit as { unit: string; amount: number } | undefined;
    if (overdraft && overdraft.unit !== q.unit) throw new CyclesError('UNIT_MISMATCH', `Amount unit must equal the budget unit ${q.unit}`);
    if (overdraft && overdraft.amount > MAX_AMOUNT) throw new CyclesError('INVALID_REQUEST', 'overdraft_limit exceeds 2^53-1');
    const r = await this.store.updateBudget(
      tenant, scope, q.unit, overdraft?.amount, body.commit_overage_policy as string | undefined,
      body.metadata === undefined ? undefined : JSON.stringify(body.metadata), Date.now(), emitCtx(auth, corr),
    );
    if (r[0] !== 'OK') throw budgetRefusal(r[0], r[1], tenant, scope, q.unit);
    return this.lookupBudget(auth, scope, q.unit);
  }
}

/** Introspection (normative): what the presented credential may see and do. */
export function introspect(auth: AuthContext): Record<string, unknown> {
  const flags = [
    'view_overview', 'view_budgets', 'view_events', 'view_webhooks', 'view_audit', 'view_tenants', 'view_api_keys',
    'view_policies', 'view_reservations', 'manage_budgets', 'manage_policies', 'manage_webhooks', 'manage_tenants',
    'manage_api_keys', 'manage_reservations',
  ];
  if (auth.kind === 'admin') {
    return { authenticated: true, auth_type: 'admin', permissions: ['*'], capabilities: Object.fromEntries(flags.map((f) => [f, true])) };
  }
  const p = new Set(auth.permissions);
  const any = (...names: string[]) => names.some((n) => p.has(n));
  const capabilities: Record<string, boolean> = {
    view_overview: false,
    view_budgets: any('budgets:read', 'admin:read', 'admin:budgets:read'),
    view_events: any('events:read', 'admin:read', 'admin:events:read'),
    view_webhooks: any('webhooks:read', 'admin:read', 'admin:webhooks:read'),
    view_audit: false,
    view_tenants: false,
    view_api_keys: false,
    view_policies: any('policies:read', 'admin:read', 'admin:policies:read'),
    view_reservations: any('reservations:list', 'reservations:create', 'reservations:commit', 'reservations:release', 'reservations:extend', 'admin:read'),
    manage_budgets: any('budgets:write', 'admin:write', 'admin:budgets:write'),
    manage_policies: any('policies:write', 'admin:write', 'admin:policies:write'),
    manage_webhooks: any('webhooks:write', 'admin:write', 'admin:webhooks:write'),
    manage_tenants: false,
    manage_api_keys: false,
    manage_reservations: any('reservations:create', 'reservations:commit', 'reservations:release', 'reservations:extend', 'admin:write'),
  };
  const out: Record<string, unknown> = { authenticated: true, auth_type: 'tenant', permissions: [...auth.permissions], tenant_id: auth.tenantId };
  if (auth.scopeFilter.length > 0) out.scope_filter = [...auth.scopeFilter];
  out.capabilities = capabilities;
  return out;
}
