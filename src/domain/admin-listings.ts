import type { AdminStore, RecordFields } from '../store/admin-store.js';
import type { ListingStore } from '../store/listing-store.js';
import type { AuthContext } from './auth.js';
import { apiKeyView, ledgerView, PERMISSIONS, tenantView } from './admin.js';
import { hashSecret } from './authenticator.js';
import { payloadHash } from './canonical.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import { CyclesError } from './errors.js';
import { scanIndex } from './listing.js';

/**
 * Governance listings (admin digest §0.6, §2.1, §2.2, §2.4), the admin-plane balances query, the
 * API-key update and key validation (§4.2).
 *
 * Two ways to page, both bounded:
 * - index order (tenants by created_at, admin-plane balances by scope): walk the index from the
 *   cursor's position, examine at most PAGE_SCAN_BUDGET entries, answer with what matched;
 * - any other order: read every candidate (at most SORT_CANDIDATE_CAP), keep the matches (at most
 *   SORT_MATCH_CAP), sort, and page by the (sort value, id) of the last row. Beyond either cap the
 *   request is refused with 400 LIMIT_EXCEEDED and the caller narrows the filters, as the
 *   reference server does.
 * Cursors are opaque and bound to the sort and filters they were issued for.
 */

export const LIST_LIMIT_DEFAULT = 50;
export const LIST_LIMIT_MAX = 100;
export const SEARCH_MAX_CHARS = 128;
/** Index entries examined per index-order page before answering with a partial page. */
export const PAGE_SCAN_BUDGET = 5000;
/** Source rows a sorted listing may read (the reference's 50,000). */
export const SORT_CANDIDATE_CAP = 50_000;
/** Matching rows a sorted listing may hold and sort (the reference's 20,000). */
export const SORT_MATCH_CAP = 20_000;
/** Records read per round trip. */
const HYDRATE_WINDOW = 250;
/** Tenant ids read per round trip while enumerating the registry. */
const REGISTRY_WINDOW = 1000;

const TENANT_SORTS = ['tenant_id', 'name', 'status', 'created_at'] as const;
const BUDGET_SORTS = ['tenant_id', 'scope', 'unit', 'status', 'commit_overage_policy', 'utilization', 'debt'] as const;
const KEY_SORTS = ['key_id', 'name', 'tenant_id', 'status', 'created_at', 'expires_at'] as const;
const NUMERIC_SORTS = new Set(['utilization', 'debt']);

type SortDir = 'asc' | 'desc';
type SortValue = string | number;
type SortKey = [SortValue, string];

export interface TenantListQuery {
  status?: string;
  parent_tenant_id?: string;
  search?: string;
  sort_by?: string;
  sort_dir?: string;
  limit?: number;
  cursor?: string;
}

export interface BudgetListQuery {
  tenant_id?: string;
  scope_prefix?: string;
  unit?: string;
  status?: string;
  over_limit?: boolean;
  has_debt?: boolean;
  utilization_min?: number;
  utilization_max?: number;
  search?: string;
  sort_by?: string;
  sort_dir?: string;
  limit?: number;
  cursor?: string;
}

export interface ApiKeyListQuery {
  tenant_id?: string;
  status?: string;
  search?: string;
  sort_by?: string;
  sort_dir?: string;
  limit?: number;
  cursor?: string;
}

export interface BalanceQuery {
  scope_prefix?: string;
  unit?: string;
  limit?: number;
  cursor?: string;
}

export interface ApiKeyUpdate {
  name?: string;
  description?: string;
  permissions?: string[];
  scope_filter?: string[];
  metadata?: Record<string, unknown>;
}

// ------------------------------------------------------------------ parameter rules

/** The reference clamps list limits into [1, 100] (admin-plane balances refuse them instead). */
function clampLimit(limit: number | undefined): number {
  if (limit === undefined) return LIST_LIMIT_DEFAULT;
  return Math.min(LIST_LIMIT_MAX, Math.max(1, Math.trunc(limit)));
}

/** Trimmed, lower-cased search text; blank is absent; longer than 128 characters is a 400. */
function searchText(search: string | undefined): string | undefined {
  if (search === undefined) return undefined;
  const s = search.trim();
  if (s === '') return undefined;
  if (s.length > SEARCH_MAX_CHARS) {
    throw new CyclesError('INVALID_REQUEST', `Invalid value for parameter 'search': longer than ${SEARCH_MAX_CHARS} characters`);
  }
  return s.toLowerCase();
}

function contains(value: string | undefined, needle: string): boolean {
  return value !== undefined && value.toLowerCase().includes(needle);
}

function sortSpec(allowed: readonly string[], sortBy: string | undefined, sortDir: string | undefined, fallback: string): { by: string; dir: SortDir } {
  const by = sortBy === undefined || sortBy === '' ? fallback : sortBy;
  if (!allowed.includes(by)) {
    throw new CyclesError('INVALID_REQUEST', `Invalid value for parameter 'sort_by': ${by} (allowed: ${allowed.join(', ')})`);
  }
  const dir = sortDir === undefined || sortDir === '' ? 'desc' : sortDir.toLowerCase();
  if (dir !== 'asc' && dir !== 'desc') throw new CyclesError('INVALID_REQUEST', `Invalid value for parameter 'sort_dir': ${sortDir} (allowed: asc, desc)`);
  return { by, dir };
}

/** A short hash of what a cursor was issued for; a cursor only continues the same result set. */
function binding(value: unknown): string {
  return payloadHash(value).slice(0, 22);
}

function staleCursor(): CyclesError {
  return new CyclesError('INVALID_REQUEST', 'Cursor is not valid for this result set; restart pagination without a cursor');
}

function limitExceeded(message: string, details: Record<string, unknown>): CyclesError {
  return new CyclesError('LIMIT_EXCEEDED', message, details, 400);
}

/**
 * Key scope_filter (admin digest §4.3): a scope is allowed iff an entry equals one of its
 * segments, or an entry `kind:*` matches a segment of that kind. Empty = unrestricted.
 */
export function scopeFilterPermits(filter: readonly string[], scope: string): boolean {
  if (filter.length === 0) return true;
  const segments = scope.toLowerCase().split('/');
  return filter.some((raw) => {
    const entry = raw.toLowerCase();
    if (entry.endsWith(':*')) return segments.some((s) => s.startsWith(entry.slice(0, -1)));
    return segments.includes(entry);
  });
}

function checkScopePrefix(auth: AuthContext, prefix: string | undefined): void {
  if (auth.kind !== 'tenant' || prefix === undefined || prefix === '') return;
  if (!scopeFilterPermits(auth.scopeFilter, prefix)) {
    throw new CyclesError('FORBIDDEN', `API key scope_filter does not permit access to scope: ${prefix}`);
  }
}

// ------------------------------------------------------------------ sorted pages

interface Candidate {
  key: SortKey;
  rec: RecordFields;
}

function compare(a: SortKey, b: SortKey): number {
  if (a[0] < b[0]) return -1;
  if (a[0] > b[0]) return 1;
  return a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0;
}

/** The (value, id) position a sorted cursor carries, checked against the result set it names. */
function sortedPosition(cursor: string | undefined, bound: string, numeric: boolean): SortKey | undefined {
  if (cursor === undefined || cursor === '') return undefined;
  const c = decodeCursor<{ m?: unknown; b?: unknown; v?: unknown; id?: unknown }>(cursor);
  if (c.m !== 's' || c.b !== bound || typeof c.id !== 'string' || typeof c.v !== (numeric ? 'number' : 'string')) throw staleCursor();
  return [c.v as SortValue, c.id];
}

/** Sorts the matches and cuts the page after the cursor position. */
function sortedPage(
  wrapper: string,
  rows: Candidate[],
  dir: SortDir,
  after: SortKey | undefined,
  limit: number,
  bound: string,
  view: (rec: RecordFields) => Record<string, unknown>,
): Record<string, unknown> {
  const sign = dir === 'asc' ? 1 : -1;
  rows.sort((a, b) => sign * compare(a.key, b.key));
  let start = 0;
  if (after) {
    start = rows.findIndex((row) => sign * compare(row.key, after) > 0);
    if (start === -1) start = rows.length;
  }
  const page = rows.slice(start, start + limit);
  const out: Record<string, unknown> = { [wrapper]: page.map((row) => view(row.rec)) };
  const last = page[page.length - 1];
  if (start + limit < rows.length && last) {
    out.next_cursor = encodeCursor({ m: 's', b: bound, v: last.key[0], id: last.key[1] });
    out.has_more = true;
  } else {
    out.has_more = false;
  }
  return out;
}

/** Collects matches up to SORT_MATCH_CAP, counting every match so the refusal can say how many. */
class MatchSet {
  readonly rows: Candidate[] = [];
  private matched = 0;

  add(row: Candidate): void {
    this.matched += 1;
    if (this.matched <= SORT_MATCH_CAP) this.rows.push(row);
  }

  check(): void {
    if (this.matched > SORT_MATCH_CAP) {
      throw limitExceeded(`More than ${SORT_MATCH_CAP} rows match; narrow the filters`, { total_matched: this.matched });
    }
  }
}

function budgetUtilization(rec: RecordFields): number {
  const allocated = Number(rec.allocated ?? 0);
  return allocated > 0 ? Number(rec.spent ?? 0) / allocated : 0;
}

function budgetSortValue(by: string, rec: RecordFields): SortValue {
  switch (by) {
    case 'utilization':
      return budgetUtilization(rec);
    case 'debt':
      return Number(rec.debt ?? 0);
    default:
      return rec[by] ?? '';
  }
}

/** Splits a budget index member "scope|unit". */
function splitMember(member: string): { scope: string; unit: string } {
  const bar = member.lastIndexOf('|');
  return { scope: member.slice(0, bar), unit: member.slice(bar + 1) };
}

export class AdminListingService {
  constructor(
    private readonly store: ListingStore,
    private readonly admin: AdminStore,
  ) {}

  // ------------------------------------------------------------------ tenants

  /** The tenant filters of a listing (or a bulk action) as one predicate; validates `search`. */
  tenantMatcher(q: Pick<TenantListQuery, 'status' | 'parent_tenant_id' | 'search'>): {
    matches: (rec: RecordFields) => boolean; status?: string; parent?: string; search?: string;
  } {
    const search = searchText(q.search);
    const status = q.status === '' ? undefined : q.status;
    const parent = q.parent_tenant_id === '' ? undefined : q.parent_tenant_id;
    const matches = (rec: RecordFields): boolean =>
      (status === undefined || rec.status === status) &&
      (parent === undefined || rec.parent_tenant_id === parent) &&
      (search === undefined || contains(rec.tenant_id, search) || contains(rec.name, search));
    return { matches, status, parent, search };
  }

  /**
   * Every tenant record the filters match, in registry (created_at) order, holding at most
   * `keep` of them and counting all (bulk actions, admin digest §2.11).
   */
  async matchTenants(q: Pick<TenantListQuery, 'status' | 'parent_tenant_id' | 'search'>, keep: number): Promise<{ rows: RecordFields[]; total: number }> {
    const { matches } = this.tenantMatcher(q);
    const all = await this.allTenantIds('narrow the filter');
    const rows: RecordFields[] = [];
    let total = 0;
    for (let i = 0; i < all.length; i += HYDRATE_WINDOW) {
      const recs = await this.store.getTenants(all.slice(i, i + HYDRATE_WINDOW));
      for (const rec of recs) {
        if (!rec || !matches(rec)) continue;
        total += 1;
        if (rows.length < keep) rows.push(rec);
      }
    }
    return { rows, total };
  }

  async listTenants(q: TenantListQuery): Promise<Record<string, unknown>> {
    const limit = clampLimit(q.limit);
    const { matches, status, parent, search } = this.tenantMatcher(q);
    const sort = sortSpec(TENANT_SORTS, q.sort_by, q.sort_dir, 'created_at');
    const bound = binding({ l: 'tenants', sort, status: status ?? null, parent: parent ?? null, search: search ?? null });

    if (sort.by === 'created_at') return this.tenantsByCreation(sort.dir, limit, q.cursor, bound, matches);

    const all = await this.allTenantIds('sort by created_at, which pages through the registry');
    const set = new MatchSet();
    for (let i = 0; i < all.length; i += HYDRATE_WINDOW) {
      const ids = all.slice(i, i + HYDRATE_WINDOW);
      const recs = await this.store.getTenants(ids);
      recs.forEach((rec, j) => {
        if (rec && matches(rec)) set.add({ key: [rec[sort.by] ?? '', ids[j]!], rec });
      });
    }
    set.check();
    return sortedPage('tenants', set.rows, sort.dir, sortedPosition(q.cursor, bound, false), limit, bound, tenantView);
  }

  /** created_at order is the registry's own order: walk it from the cursor position. */
  private async tenantsByCreation(
    dir: SortDir,
    limit: number,
    cursor: string | undefined,
    bound: string,
    matches: (rec: RecordFields) => boolean,
  ): Promise<Record<string, unknown>> {
    type Position = [string, number];
    let start: Position | undefined;
    if (cursor !== undefined && cursor !== '') {
      const c = decodeCursor<{ m?: unknown; b?: unknown; s?: unknown; id?: unknown }>(cursor);
      if (c.m !== 'i' || c.b !== bound || typeof c.s !== 'number' || typeof c.id !== 'string') throw staleCursor();
      start = [c.id, c.s];
    }
    const { rows, last, exhausted } = await scanIndex<Position, RecordFields, Record<string, unknown>>({
      start,
      limit,
      budget: PAGE_SCAN_BUDGET,
      window: HYDRATE_WINDOW,
      fetch: (after, count) => this.store.tenantWindow(dir, after && { id: after[0], score: after[1] }, count),
      hydrate: (positions) => this.store.getTenants(positions.map(([id]) => id)),
      accept: (rec) => (matches(rec) ? tenantView(rec) : undefined),
    });
    const out: Record<string, unknown> = { tenants: rows };
    if (!exhausted && last) {
      out.next_cursor = encodeCursor({ m: 'i', b: bound, s: last[1], id: last[0] });
      out.has_more = true;
    } else {
      out.has_more = false;
    }
    return out;
  }

  /** Every registered tenant id, for cross-tenant listings; refused beyond the candidate cap. */
  private async allTenantIds(hint: string): Promise<string[]> {
    const total = await this.store.tenantCount();
    if (total > SORT_CANDIDATE_CAP) {
      throw limitExceeded(`More than ${SORT_CANDIDATE_CAP} tenants to examine; ${hint}`, { total_candidates: total });
    }
    const ids: string[] = [];
    // The registry may grow while it is read; the cap bounds the loop either way.
    while (ids.length < SORT_CANDIDATE_CAP) {
      const window = await this.store.tenantIdsByRank(ids.length, REGISTRY_WINDOW);
      ids.push(...window);
      if (window.length < REGISTRY_WINDOW) break;
    }
    return ids;
  }

  // ------------------------------------------------------------------ budgets

  async listBudgets(auth: AuthContext, q: BudgetListQuery): Promise<Record<string, unknown>> {
    const limit = clampLimit(q.limit);
    let sort: { by: string; dir: SortDir } = { by: 'utilization', dir: 'desc' };
    const scan = this.budgetScan(auth, q, () => {
      sort = sortSpec(BUDGET_SORTS, q.sort_by, q.sort_dir, 'utilization');
    });
    const bound = binding({ l: 'budgets', sort, ...scan.fields });
    const after = sortedPosition(q.cursor, bound, NUMERIC_SORTS.has(sort.by));
    const set = new MatchSet();
    await scan.run((tenantId, member, rec) => set.add({ key: [budgetSortValue(sort.by, rec), `${tenantId}|${member}`], rec }));
    set.check();
    return sortedPage('ledgers', set.rows, sort.dir, after, limit, bound, ledgerView);
  }

  /**
   * Every ledger the filters match, in (tenant, scope, unit) order, holding at most `keep` of
   * them and counting all (bulk actions, admin digest §2.11).
   */
  async matchBudgets(auth: AuthContext, q: BudgetListQuery, keep: number): Promise<{ rows: RecordFields[]; total: number }> {
    const scan = this.budgetScan(auth, q, () => {});
    const rows: RecordFields[] = [];
    let total = 0;
    await scan.run((_tenantId, _member, rec) => {
      total += 1;
      if (rows.length < keep) rows.push(rec);
    });
    return { rows, total };
  }

  /**
   * Validates the budget filters (in the listing's order; `afterSearch` runs where the listing
   * checks its sort) and returns them with a bounded scan that visits every matching ledger.
   */
  private budgetScan(auth: AuthContext, q: BudgetListQuery, afterSearch: () => void): {
    fields: Record<string, unknown>;
    run: (visit: (tenantId: string, member: string, rec: RecordFields) => void) => Promise<void>;
  } {
    const search = searchText(q.search);
    afterSearch();
    const prefix = q.scope_prefix === undefined || q.scope_prefix === '' ? undefined : q.scope_prefix.toLowerCase();
    checkScopePrefix(auth, prefix);
    const { utilization_min: uMin, utilization_max: uMax } = q;
    for (const [name, v] of [['utilization_min', uMin], ['utilization_max', uMax]] as const) {
      if (v !== undefined && !(v >= 0 && v <= 1)) throw new CyclesError('INVALID_REQUEST', `Invalid value for parameter '${name}': ${v} (must be within [0, 1])`);
    }
    if (uMin !== undefined && uMax !== undefined && uMin > uMax) {
      throw new CyclesError('INVALID_REQUEST', 'utilization_min must not be greater than utilization_max');
    }
    const tenantParam = auth.kind === 'tenant' ? auth.tenantId : q.tenant_id === '' ? undefined : q.tenant_id;
    const status = q.status === '' ? undefined : q.status;
    const unit = q.unit === '' ? undefined : q.unit;
    const fields = {
      tenant: tenantParam ?? null, prefix: prefix ?? null, unit: unit ?? null, status: status ?? null,
      over: q.over_limit ?? null, debt: q.has_debt ?? null, uMin: uMin ?? null, uMax: uMax ?? null, search: search ?? null,
    };

    // Filters the index member can answer run before the ledger is read.
    const memberMatches = (tenantId: string, member: string): boolean => {
      const m = splitMember(member);
      if (unit !== undefined && m.unit !== unit) return false;
      if (prefix !== undefined && !m.scope.startsWith(prefix)) return false;
      if (search !== undefined && !tenantId.includes(search) && !m.scope.includes(search)) return false;
      return true;
    };
    const ledgerMatches = (rec: RecordFields): boolean => {
      if (status !== undefined && rec.status !== status) return false;
      if (q.over_limit !== undefined && (rec.over_limit === '1') !== q.over_limit) return false;
      if (q.has_debt !== undefined && (Number(rec.debt ?? 0) > 0) !== q.has_debt) return false;
      const u = budgetUtilization(rec);
      if (uMin !== undefined && u < uMin) return false;
      if (uMax !== undefined && u > uMax) return false;
      return true;
    };

    const run = async (visit: (tenantId: string, member: string, rec: RecordFields) => void): Promise<void> => {
      // A prefix naming a whole tenant segment selects that tenant without reading the registry.
      const rooted = prefix === undefined ? undefined : /^tenant:([^/]+)\//.exec(prefix)?.[1];
      let tenants: string[];
      if (tenantParam !== undefined) tenants = rooted !== undefined && rooted !== tenantParam ? [] : [tenantParam];
      else tenants = rooted !== undefined ? [rooted] : await this.allTenantIds('narrow the query with tenant_id');

      const counts = await this.store.budgetCounts(tenants, prefix);
      const total = counts.reduce((a, b) => a + b, 0);
      if (total > SORT_CANDIDATE_CAP) {
        throw limitExceeded(`More than ${SORT_CANDIDATE_CAP} budgets to examine; narrow the query with tenant_id or scope_prefix`, { total_candidates: total });
      }
      for (const [i, tenantId] of tenants.entries()) {
        if (counts[i] === 0) continue;
        let afterMember: string | undefined;
        // Bounded by the candidate count checked above (plus what arrived since).
        for (let read = 0; read <= SORT_CANDIDATE_CAP; ) {
          const members = await this.store.budgetMembers(tenantId, afterMember, prefix, HYDRATE_WINDOW);
          if (members.length === 0) break;
          read += members.length;
          afterMember = members[members.length - 1];
          const wanted = members.filter((m) => memberMatches(tenantId, m));
          const recs = await this.store.getBudgets(tenantId, wanted);
          recs.forEach((rec, j) => {
            if (rec && ledgerMatches(rec)) visit(tenantId, wanted[j]!, rec);
          });
          if (members.length < HYDRATE_WINDOW) break;
        }
      }
    };
    return { fields, run };
  }


  // ------------------------------------------------------------------ admin-plane balances

  /** GET /v1/balances on the governance plane: the key's tenant, ACTIVE ledgers, scope order. */
  async balances(auth: AuthContext, q: BalanceQuery): Promise<Record<string, unknown>> {
    if (auth.kind !== 'tenant') throw new CyclesError('UNAUTHORIZED', 'Missing X-Cycles-API-Key header');
    const tenantId = auth.tenantId;
    const prefix = q.scope_prefix === undefined || q.scope_prefix === '' ? undefined : q.scope_prefix.toLowerCase();
    checkScopePrefix(auth, prefix);
    const unit = q.unit === '' ? undefined : q.unit;
    const limit = q.limit ?? LIST_LIMIT_DEFAULT;
    const bound = binding({ l: 'balances', tenant: tenantId, prefix: prefix ?? null, unit: unit ?? null });
    let start: string | undefined;
    if (q.cursor !== undefined && q.cursor !== '') {
      const c = decodeCursor<{ m?: unknown; b?: unknown; k?: unknown }>(q.cursor);
      if (c.m !== 'b' || c.b !== bound || typeof c.k !== 'string') throw staleCursor();
      start = c.k;
    }
    const { rows, last, exhausted } = await scanIndex<string, RecordFields, Record<string, unknown>>({
      start,
      limit,
      budget: PAGE_SCAN_BUDGET,
      window: HYDRATE_WINDOW,
      fetch: (after, count) => this.store.budgetMembers(tenantId, after, prefix, count),
      hydrate: async (members) => {
        // Only ledgers whose member matches the unit and prefix are read.
        const wanted = members.map((m) => {
          const s = splitMember(m);
          return (unit === undefined || s.unit === unit) && (prefix === undefined || s.scope.startsWith(prefix));
        });
        const recs = await this.store.getBudgets(tenantId, members.filter((_, i) => wanted[i]));
        let j = 0;
        return members.map((_, i) => (wanted[i] ? recs[j++] : undefined));
      },
      accept: (rec) => (rec.status === 'ACTIVE' ? ledgerView(rec) : undefined),
    });
    const out: Record<string, unknown> = { balances: rows };
    if (!exhausted && last !== undefined) {
      out.next_cursor = encodeCursor({ m: 'b', b: bound, k: last });
      out.has_more = true;
    } else {
      out.has_more = false;
    }
    return out;
  }

  // ------------------------------------------------------------------ API keys

  async listApiKeys(q: ApiKeyListQuery): Promise<Record<string, unknown>> {
    const limit = clampLimit(q.limit);
    const search = searchText(q.search);
    const sort = sortSpec(KEY_SORTS, q.sort_by, q.sort_dir, 'created_at');
    const tenantParam = q.tenant_id === '' ? undefined : q.tenant_id;
    const status = q.status === '' ? undefined : q.status;
    const bound = binding({ l: 'keys', sort, tenant: tenantParam ?? null, status: status ?? null, search: search ?? null });
    const after = sortedPosition(q.cursor, bound, false);

    const tenants = tenantParam !== undefined ? [tenantParam] : await this.allTenantIds('narrow the query with tenant_id');
    const counts = await this.store.keyCounts(tenants);
    const total = counts.reduce((a, b) => a + b, 0);
    if (total > SORT_CANDIDATE_CAP) {
      throw limitExceeded(`More than ${SORT_CANDIDATE_CAP} API keys to examine; narrow the query with tenant_id`, { total_candidates: total });
    }
    const set = new MatchSet();
    for (const [i, tenantId] of tenants.entries()) {
      if (counts[i] === 0) continue;
      const ids = await this.store.keyIds(tenantId);
      for (let k = 0; k < ids.length; k += HYDRATE_WINDOW) {
        const recs = await this.store.getApiKeys(ids.slice(k, k + HYDRATE_WINDOW));
        for (const rec of recs) {
          if (!rec || rec.tenant_id !== tenantId) continue;
          if (status !== undefined && rec.status !== status) continue;
          if (search !== undefined && !contains(rec.key_id, search) && !contains(rec.name, search)) continue;
          set.add({ key: [rec[sort.by] ?? '', rec.key_id ?? ''], rec });
        }
      }
    }
    set.check();
    return sortedPage('keys', set.rows, sort.dir, after, limit, bound, apiKeyView);
  }

  /**
   * PATCH /v1/admin/api-keys/{key_id}: replaces the given fields of an ACTIVE key. A closed owner
   * wins over the key's own state (tenant-close Rule 2), so a cascade-revoked key answers
   * TENANT_CLOSED rather than the revoked-key conflict.
   */
  async updateApiKey(
    keyId: string,
    body: ApiKeyUpdate,
    onPermissionsChanged?: (tenantId: string, data: Record<string, unknown>) => Promise<void>,
  ): Promise<{ tenantId: string; key: Record<string, unknown> }> {
    for (const p of body.permissions ?? []) {
      if (!(PERMISSIONS as readonly string[]).includes(p)) throw new CyclesError('INVALID_REQUEST', `Unrecognized permission: ${p}`);
    }
    if (body.name !== undefined && body.name.trim() === '') throw new CyclesError('INVALID_REQUEST', 'Validation failed: body/name must not be blank');
    const rec = await this.admin.getApiKey(keyId);
    if (!rec) throw new CyclesError('NOT_FOUND', `API key not found: ${keyId}`);
    const tenantId = rec.tenant_id ?? '';
    const tenant = tenantId ? await this.admin.getTenant(tenantId) : undefined;
    if (tenant?.status === 'CLOSED') throw new CyclesError('TENANT_CLOSED', `Tenant is CLOSED: ${tenantId}`);
    const notActive = (status: string | undefined) =>
      new CyclesError('INVALID_REQUEST', `Cannot modify a ${status ?? 'REVOKED'} key`, undefined, 409);
    if (rec.status !== 'ACTIVE') throw notActive(rec.status);

    const fields: RecordFields = {};
    if (body.name !== undefined) fields.name = body.name;
    if (body.description !== undefined) fields.description = body.description;
    if (body.permissions !== undefined) fields.permissions = JSON.stringify([...new Set(body.permissions)]);
    if (body.scope_filter !== undefined) fields.scope_filter = JSON.stringify(body.scope_filter);
    if (body.metadata !== undefined) fields.metadata = JSON.stringify(body.metadata);
    const r = await this.store.updateApiKey(keyId, fields);
    if (r.result === 'NOT_FOUND') throw new CyclesError('NOT_FOUND', `API key not found: ${keyId}`);
    if (r.result === 'NOT_ACTIVE') throw notActive(r.status);
    if (fields.permissions !== undefined && fields.permissions !== rec.permissions && onPermissionsChanged) {
      await onPermissionsChanged(tenantId, {
        key_id: keyId, ...(rec.name ? { key_name: fields.name ?? rec.name } : {}), new_status: 'ACTIVE', permissions: JSON.parse(fields.permissions),
      });
    }
    return { tenantId, key: apiKeyView({ ...rec, ...fields }) };
  }

  // ------------------------------------------------------------------ validation

  /**
   * POST /v1/auth/validate: always an answer, never an error. Checks in the reference's order:
   * key exists, key ACTIVE, not past expires_at, tenant exists, tenant ACTIVE. Read fresh from the
   * store (not the auth cache), so a revocation shows at once.
   */
  async validateKey(secret: string, nowMs: number = Date.now()): Promise<Record<string, unknown>> {
    const rec = await this.admin.findApiKeyBySecretHash(hashSecret(secret));
    if (!rec) return { valid: false, tenant_id: '', reason: 'KEY_NOT_FOUND' };
    const tenantId = rec.tenant_id ?? '';
    const invalid = (reason: string) => ({ valid: false, tenant_id: tenantId, ...(rec.key_id ? { key_id: rec.key_id } : {}), reason });
    if (rec.status !== 'ACTIVE') return invalid(rec.status === 'EXPIRED' ? 'KEY_EXPIRED' : 'KEY_REVOKED');
    if (rec.expires_at && Date.parse(rec.expires_at) <= nowMs) return invalid('KEY_EXPIRED');
    const tenant = tenantId ? await this.admin.getTenant(tenantId) : undefined;
    if (!tenant) return invalid('TENANT_NOT_FOUND');
    if (tenant.status === 'SUSPENDED') return invalid('TENANT_SUSPENDED');
    if (tenant.status === 'CLOSED') return invalid('TENANT_CLOSED');
    const out: Record<string, unknown> = {
      valid: true,
      tenant_id: tenantId,
      key_id: rec.key_id,
      permissions: JSON.parse(rec.permissions ?? '[]'),
      scope_filter: JSON.parse(rec.scope_filter ?? '[]'),
    };
    if (rec.expires_at) out.expires_at = rec.expires_at;
    return out;
  }
}
