import type { EmitContext, RecordFields } from '../store/admin-store.js';
import type { PolicyStore } from '../store/policy-store.js';
import type { AuthContext, Correlation } from './auth.js';
import { actorJson } from './auth.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import { CyclesError } from './errors.js';
import { newEventIdBase, newId } from './ids.js';
import { SCOPE_LEVELS, parseBudgetScope, type ScopeLevel } from './scopes.js';

/**
 * Policies (admin digest §2.3): stored configuration the v0 runtime does not enforce. A policy
 * belongs to one tenant, and its id carries that tenant (`pol_<tenant>_<16 hex>`), so an update
 * finds the tenant's slot without a global lookup (ADR 0011).
 */

/** Policy ids examined per list page before answering with a partial page and a cursor. */
export const POLICY_SCAN_BUDGET = 5000;
/** Index entries read per round trip while listing. */
const POLICY_SCAN_WINDOW = 200;

/** Settings stored as JSON text and returned as objects. */
const JSON_FIELDS = ['caps', 'reservation_ttl_override', 'rate_limits'] as const;
const STRING_FIELDS = ['description', 'commit_overage_policy', 'status'] as const;
const DATE_FIELDS = ['effective_from', 'effective_until'] as const;
/** The fields a PATCH may carry (scope_pattern is immutable). */
const UPDATABLE = ['name', 'priority', ...STRING_FIELDS, ...JSON_FIELDS, ...DATE_FIELDS] as const;

const TENANT_ID = /^[a-z0-9-]{1,64}$/;
const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/i;

export function newPolicyId(tenantId: string): string {
  return newId(`pol_${tenantId}`, 8);
}

/** The tenant a policy id names, or undefined when the id is not one of ours. */
export function tenantOfPolicyId(policyId: string): string | undefined {
  if (!policyId.startsWith('pol_')) return undefined;
  const last = policyId.lastIndexOf('_');
  if (last <= 4) return undefined;
  const tenant = policyId.slice(4, last);
  if (!TENANT_ID.test(tenant) || !/^[0-9a-f]{16}$/.test(policyId.slice(last + 1))) return undefined;
  return tenant;
}

/**
 * The budget scope grammar, plus a wildcard as the final segment: a bare `*` (every descendant)
 * or `level:*` (any id at that level). The pattern must start with `tenant:<id>`; ids are
 * lower-cased as budget scopes are.
 */
export function parseScopePattern(pattern: string): { pattern: string; tenant: string } | { error: string } {
  const segments = pattern.split('/');
  const last = segments[segments.length - 1] ?? '';
  let wildcard: string | undefined;
  if (last === '*' || last.endsWith(':*')) {
    wildcard = last;
    segments.pop();
  }
  if (segments.length === 0) return { error: "scope_pattern must start with 'tenant:<id>'" };
  if (segments.some((s) => s.includes('*'))) return { error: "'*' is allowed only as the final segment or as its id" };
  const parsed = parseBudgetScope(segments.join('/'));
  if ('error' in parsed) return parsed;
  if (wildcard !== undefined && wildcard !== '*') {
    const level = wildcard.slice(0, -2) as ScopeLevel;
    const index = SCOPE_LEVELS.indexOf(level);
    if (index === -1) return { error: `unknown scope level '${level}'` };
    const prefixLevels = parsed.scope.split('/').map((s) => SCOPE_LEVELS.indexOf(s.slice(0, s.indexOf(':')) as ScopeLevel));
    if (index <= Math.max(...prefixLevels)) return { error: `scope level '${level}' is out of canonical order or repeated` };
  }
  return { pattern: wildcard === undefined ? parsed.scope : `${parsed.scope}/${wildcard}`, tenant: parsed.tenant };
}

/**
 * API-key scope_filter (admin digest §4.3): some entry must equal a segment of the scope, or be
 * `kind:*` and match a segment of that kind; a bare `*` is no wildcard. An empty filter allows
 * everything.
 */
export function scopeFilterPermits(filter: readonly string[], scope: string): boolean {
  if (filter.length === 0) return true;
  const segments = scope.toLowerCase().split('/');
  return filter.some((raw) => {
    const entry = raw.toLowerCase();
    if (entry === '*') return false;
    if (entry.endsWith(':*')) return segments.some((s) => s.startsWith(entry.slice(0, -1)));
    return segments.includes(entry);
  });
}

function checkScopeFilter(auth: AuthContext, scope: string): void {
  if (auth.kind === 'tenant' && !scopeFilterPermits(auth.scopeFilter, scope)) {
    throw new CyclesError('FORBIDDEN', `API key scope_filter does not permit access to scope: ${scope}`);
  }
}

function isoDateTime(field: string, value: unknown): string {
  const s = String(value);
  const ms = Date.parse(s);
  if (!ISO_DATE_TIME.test(s) || Number.isNaN(ms)) throw new CyclesError('INVALID_REQUEST', `Validation failed: body/${field} must be a date-time`);
  return new Date(ms).toISOString();
}

function nonBlankName(value: unknown): string {
  const name = String(value);
  if (name.trim() === '') throw new CyclesError('INVALID_REQUEST', 'Validation failed: body/name must not be blank');
  return name;
}

/** Record fields for the settings a create or update body carries (name and pattern aside). */
function settingFields(body: Record<string, unknown>): RecordFields {
  const fields: RecordFields = {};
  if (body.priority !== undefined) fields.priority = String(body.priority);
  for (const f of STRING_FIELDS) if (body[f] !== undefined) fields[f] = String(body[f]);
  for (const f of JSON_FIELDS) if (body[f] !== undefined) fields[f] = JSON.stringify(body[f]);
  for (const f of DATE_FIELDS) if (body[f] !== undefined) fields[f] = isoDateTime(f, body[f]);
  return fields;
}

/** The Policy wire shape; tenant_id is kept in the record but not returned (as the reference). */
export function policyView(rec: RecordFields): Record<string, unknown> {
  const out: Record<string, unknown> = { policy_id: rec.policy_id, name: rec.name };
  if (rec.description !== undefined) out.description = rec.description;
  out.scope_pattern = rec.scope_pattern;
  out.priority = Number(rec.priority ?? 0);
  for (const f of JSON_FIELDS) if (rec[f] !== undefined) out[f] = JSON.parse(rec[f]!);
  if (rec.commit_overage_policy !== undefined) out.commit_overage_policy = rec.commit_overage_policy;
  out.status = rec.status ?? 'ACTIVE';
  for (const f of DATE_FIELDS) if (rec[f] !== undefined) out[f] = rec[f];
  out.created_at = rec.created_at;
  if (rec.updated_at !== undefined) out.updated_at = rec.updated_at;
  return out;
}

function emitCtx(auth: AuthContext, corr: Correlation): EmitContext {
  return { eventIdBase: newEventIdBase(), requestId: corr.requestId, traceId: corr.traceId, actorJson: actorJson(auth) };
}

export interface PolicyListQuery {
  tenant_id?: string;
  scope_pattern?: string;
  status?: string;
  cursor?: string;
  limit?: number;
}

export class PolicyService {
  constructor(private readonly store: PolicyStore) {}

  async create(auth: AuthContext, body: Record<string, unknown>, corr: Correlation): Promise<{ tenantId: string; policy: Record<string, unknown> }> {
    let tenantId: string;
    if (auth.kind === 'tenant') {
      if (body.tenant_id !== undefined) throw new CyclesError('INVALID_REQUEST', 'tenant_id must not be sent with a tenant API key');
      tenantId = auth.tenantId;
    } else {
      if (body.tenant_id === undefined || body.tenant_id === '') {
        throw new CyclesError('INVALID_REQUEST', 'tenant_id is required when using admin key authentication');
      }
      tenantId = String(body.tenant_id);
    }
    const name = nonBlankName(body.name);
    const parsed = parseScopePattern(String(body.scope_pattern));
    if ('error' in parsed) throw new CyclesError('INVALID_REQUEST', `Invalid scope_pattern: ${parsed.error}`);
    if (parsed.tenant !== tenantId) {
      throw new CyclesError('INVALID_REQUEST', `scope_pattern must start with 'tenant:${tenantId}', the tenant the policy belongs to`);
    }
    checkScopeFilter(auth, parsed.pattern);

    const now = new Date().toISOString();
    const policyId = newPolicyId(tenantId);
    const fields: RecordFields = { status: 'ACTIVE', priority: '0', ...settingFields(body), created_at: now, updated_at: now };
    const r = await this.store.create(tenantId, policyId, name, parsed.pattern, fields, emitCtx(auth, corr));
    switch (r.result) {
      case 'CREATED':
        break;
      case 'TENANT_NOT_FOUND':
        throw new CyclesError('TENANT_NOT_FOUND', `Tenant not found: ${tenantId}`);
      case 'TENANT_CLOSED':
        throw new CyclesError('TENANT_CLOSED', `Tenant is CLOSED: ${tenantId}`);
      case 'DUPLICATE_RESOURCE':
        throw new CyclesError('DUPLICATE_RESOURCE', `A policy named '${name}' already exists for tenant ${tenantId}`);
      default:
        throw new CyclesError('INVALID_REQUEST', 'detail' in r && r.detail ? r.detail : 'Policy could not be created');
    }
    return {
      tenantId,
      policy: policyView({ ...fields, policy_id: policyId, tenant_id: tenantId, name, scope_pattern: parsed.pattern }),
    };
  }

  async update(auth: AuthContext, policyId: string, body: Record<string, unknown>, corr: Correlation): Promise<{ tenantId: string; policy: Record<string, unknown> }> {
    if (body.scope_pattern !== undefined) throw new CyclesError('INVALID_REQUEST', 'scope_pattern is immutable and cannot be updated');
    const tenantId = tenantOfPolicyId(policyId);
    const stored = tenantId === undefined ? undefined : await this.store.get(tenantId, policyId);
    if (tenantId === undefined || stored === undefined || stored.tenant_id !== tenantId) {
      throw new CyclesError('NOT_FOUND', `Policy not found: ${policyId}`);
    }
    if (auth.kind === 'tenant' && auth.tenantId !== tenantId) throw new CyclesError('FORBIDDEN', 'Policy does not belong to tenant');
    checkScopeFilter(auth, stored.scope_pattern ?? '');

    const name = body.name === undefined ? undefined : nonBlankName(body.name);
    const fields = settingFields(body);
    const changed = UPDATABLE.filter((f) => body[f] !== undefined);
    const r = await this.store.update(tenantId, policyId, name, new Date().toISOString(), changed, fields, emitCtx(auth, corr));
    if (r.result === 'OK' && 'record' in r) return { tenantId, policy: policyView(r.record) };
    switch (r.result) {
      case 'TENANT_CLOSED':
        throw new CyclesError('TENANT_CLOSED', `Tenant is CLOSED: ${tenantId}`);
      case 'DUPLICATE_RESOURCE':
        throw new CyclesError('DUPLICATE_RESOURCE', `A policy named '${name}' already exists for tenant ${tenantId}`);
      default:
        throw new CyclesError('NOT_FOUND', `Policy not found: ${policyId}`);
    }
  }

  async list(auth: AuthContext, q: PolicyListQuery): Promise<Record<string, unknown>> {
    let tenantId: string;
    if (auth.kind === 'tenant') {
      tenantId = auth.tenantId;
    } else {
      if (q.tenant_id === undefined || q.tenant_id === '') {
        throw new CyclesError('INVALID_REQUEST', 'tenant_id query parameter is required when using admin key authentication');
      }
      tenantId = q.tenant_id;
      // No tenant has such an id, and it must not shape a key name (hash tag braces).
      if (!TENANT_ID.test(tenantId)) return { policies: [], has_more: false };
    }
    let patternFilter: string | undefined;
    if (q.scope_pattern !== undefined && q.scope_pattern !== '') {
      const parsed = parseScopePattern(q.scope_pattern);
      patternFilter = 'error' in parsed ? q.scope_pattern : parsed.pattern;
      checkScopeFilter(auth, patternFilter);
    }
    let after: string | undefined;
    if (q.cursor !== undefined && q.cursor !== '') {
      const c = decodeCursor<{ m?: string; id?: string }>(q.cursor);
      if (c.m !== 'pol' || typeof c.id !== 'string' || tenantOfPolicyId(c.id) !== tenantId) {
        throw new CyclesError('INVALID_REQUEST', 'cursor is not valid for this listing; restart pagination without a cursor');
      }
      after = c.id;
    }
    const limit = q.limit ?? 50;
    const policies: Record<string, unknown>[] = [];
    let examined = 0;
    let last = after;
    let exhausted = false;
    while (policies.length < limit && examined < POLICY_SCAN_BUDGET) {
      const ids = await this.store.ids(tenantId, last, Math.min(POLICY_SCAN_WINDOW, POLICY_SCAN_BUDGET - examined));
      if (ids.length === 0) {
        exhausted = true;
        break;
      }
      const recs = await this.store.getMany(tenantId, ids);
      for (let i = 0; i < ids.length && policies.length < limit; i += 1) {
        examined += 1;
        last = ids[i];
        const rec = recs[i];
        if (!rec) continue;
        if (patternFilter !== undefined && rec.scope_pattern !== patternFilter) continue;
        if (q.status !== undefined && (rec.status ?? 'ACTIVE') !== q.status) continue;
        policies.push(policyView(rec));
      }
    }
    // Only promise more when the index really holds ids past the last one examined.
    if (!exhausted) exhausted = last === undefined || (await this.store.ids(tenantId, last, 1)).length === 0;
    const out: Record<string, unknown> = { policies };
    if (!exhausted && last !== undefined) {
      out.next_cursor = encodeCursor({ m: 'pol', id: last });
      out.has_more = true;
    } else {
      out.has_more = false;
    }
    return out;
  }
}
