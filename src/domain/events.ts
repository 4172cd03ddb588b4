import type { RecordFields } from '../store/admin-store.js';
import type { EventIndex, EventStore, ScoreBounds } from '../store/event-store.js';
import type { ListingStore } from '../store/listing-store.js';
import type { WebhookStore } from '../store/webhook-store.js';
import type { AuthContext } from './auth.js';
import { CyclesError } from './errors.js';
import { scanIndex } from './listing.js';
import { EVENT_TYPES, ownerOfSubscriptionId, SYSTEM_OWNER, TENANT_CATEGORIES } from './webhooks.js';

/**
 * Reads of the event log and the webhook delivery log (admin digest §2.6, §2.7) and the admin
 * overview (§2.10). The events service writes both logs (ADR 0014); this module only reads them,
 * through the indexes: a tenant's event zset (`P:{t}:events`), the global one (`P:events:_all`),
 * a correlation set, or a subscription's delivery zset.
 *
 * Paging. The default order is the index order (timestamp, newest first; `sort_dir=asc` walks
 * the same index oldest first). A page walks the index from the cursor position and examines at
 * most EVENT_SCAN_BUDGET entries (the digest's 5,000-candidate budget). When a sparse filter
 * (say `request_id` over the global index) has not filled the page by then, the answer is the
 * rows found so far with `has_more: true` and a cursor at the last entry examined, never a 400:
 * the caller follows the cursor (or narrows from/to), and the work per request stays bounded. The
 * reference answers 400 LIMIT_EXCEEDED in that case; a partial page is what every other
 * index-order listing here does (ADR 0012, the audit log), and it cannot fail a caller that would
 * have found its rows on the next page.
 *
 * Cursors are the id of the last entry of the page (event_id, delivery_id), as in the reference.
 * A cursor is resolved to its (timestamp, id) position in the index being walked; an id the index
 * does not hold answers 400 INVALID_REQUEST. Entries sharing a millisecond are ordered by id, so
 * a cursor inside one millisecond continues exactly.
 *
 * `correlation_id` reads the correlation set instead of the time index when the set holds at
 * most CORRELATION_SET_CAP ids (always, in practice: bulk actions touch at most 500 rows); a
 * larger set falls back to the index walk with correlation_id as a filter.
 *
 * `sort_by` other than timestamp (event_type, category, scope, tenant_id) sorts in memory: at most
 * EVENT_SORT_CANDIDATE_CAP events in the from/to window (or the correlation set) are read, else
 * 400 LIMIT_EXCEEDED with details.total_candidates (narrow tenant_id or from/to), as the reference
 * refuses exact sorts over too many candidates. Ties break on event_id.
 */

export const EVENT_LIMIT_DEFAULT = 50;
export const EVENT_LIMIT_MAX = 100;
/** Index entries examined per page before answering with a partial page and a cursor. */
export const EVENT_SCAN_BUDGET = 5000;
/** Delivery index entries examined per page, likewise. */
export const DELIVERY_SCAN_BUDGET = 5000;
/** Correlation sets up to this size are read whole; larger ones fall back to the index walk. */
export const CORRELATION_SET_CAP = 5000;
/** Events a non-timestamp sort may read and sort (events are larger than ledgers or keys). */
export const EVENT_SORT_CANDIDATE_CAP = 10_000;
/** Index entries read per round trip. */
const SCAN_WINDOW = 250;
const SEARCH_MAX_CHARS = 128;

export const EVENT_CATEGORIES = ['budget', 'tenant', 'api_key', 'policy', 'reservation', 'system', 'webhook'] as const;
const EVENT_SORTS = ['event_type', 'category', 'scope', 'tenant_id', 'timestamp'] as const;
export const DELIVERY_STATUSES = ['PENDING', 'SUCCESS', 'FAILED', 'RETRYING'] as const;
const TRACE_ID = /^[0-9a-f]{32}$/;
const CUSTOM_TYPE = /^custom\.[a-z0-9_.-]+$/;
const TENANT_ID = /^[a-z0-9-]{1,64}$/;

/** The Event wire shape as stored by the relay (admin spec Event). */
export interface WireEvent {
  event_id: string;
  event_type: string;
  category: string;
  timestamp: string;
  tenant_id: string;
  scope?: string;
  correlation_id?: string;
  request_id?: string;
  trace_id?: string;
  data?: Record<string, unknown>;
  [field: string]: unknown;
}

export interface EventListQuery {
  tenant_id?: string;
  event_type?: string;
  category?: string;
  scope?: string;
  correlation_id?: string;
  trace_id?: string;
  request_id?: string;
  from?: string;
  to?: string;
  search?: string;
  sort_by?: string;
  sort_dir?: string;
  cursor?: string;
  limit?: number;
}

export type TenantEventListQuery = Pick<EventListQuery, 'event_type' | 'category' | 'scope' | 'correlation_id' | 'from' | 'to' | 'cursor' | 'limit'>;

export interface DeliveryListQuery {
  status?: string;
  from?: string;
  to?: string;
  cursor?: string;
  limit?: number;
}

// ------------------------------------------------------------------ vocabulary

/** A type of the EventType enum (category.action). */
export function isKnownEventType(type: string): boolean {
  const dot = type.indexOf('.');
  return dot > 0 && (EVENT_TYPES[type.slice(0, dot)]?.includes(type.slice(dot + 1)) ?? false);
}

function categoryOfType(type: string): string {
  return type.slice(0, type.indexOf('.'));
}

// ------------------------------------------------------------------ parameter rules

function blank(v: string | undefined): boolean {
  return v === undefined || v.trim() === '';
}

function invalid(name: string, value: string, allowed?: string): CyclesError {
  return new CyclesError('INVALID_REQUEST', `Invalid value for parameter '${name}': ${value}${allowed ? ` (${allowed})` : ''}`);
}

/** Lists clamp their limit into [1, 100], as the reference and every governance listing do (ADR 0012). */
function clampLimit(limit: number | undefined): number {
  if (limit === undefined) return EVENT_LIMIT_DEFAULT;
  return Math.min(EVENT_LIMIT_MAX, Math.max(1, Math.trunc(limit)));
}

function instant(name: string, value: string | undefined): number | undefined {
  if (blank(value)) return undefined;
  const ms = Date.parse(value!);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value!) || Number.isNaN(ms)) throw invalid(name, value!, 'expected an ISO-8601 date-time');
  return ms;
}

/** from/to as inclusive millisecond bounds; from after to is a 400. */
function timeBounds(from: string | undefined, to: string | undefined): ScoreBounds {
  const minMs = instant('from', from);
  const maxMs = instant('to', to);
  if (minMs !== undefined && maxMs !== undefined && minMs > maxMs) throw new CyclesError('INVALID_REQUEST', "'from' must not be after 'to'");
  return { minMs, maxMs };
}

function staleCursor(): CyclesError {
  return new CyclesError('INVALID_REQUEST', 'Cursor is not valid for this result set; restart pagination without a cursor');
}

// ------------------------------------------------------------------ filters

interface EventFilter {
  tenantId?: string;
  eventType?: string;
  category?: string;
  /** Categories a tenant key may read; every other event is invisible to it. */
  visibleCategories?: readonly string[];
  scopePrefix?: string;
  correlationId?: string;
  traceId?: string;
  requestId?: string;
  search?: string;
  bounds: ScoreBounds;
}

function eventMatches(e: WireEvent, f: EventFilter): boolean {
  if (f.tenantId !== undefined && e.tenant_id !== f.tenantId) return false;
  if (f.eventType !== undefined && e.event_type !== f.eventType) return false;
  if (f.category !== undefined && e.category !== f.category) return false;
  if (f.visibleCategories !== undefined && !f.visibleCategories.includes(e.category)) return false;
  if (f.scopePrefix !== undefined && !(typeof e.scope === 'string' && e.scope.toLowerCase().startsWith(f.scopePrefix))) return false;
  if (f.correlationId !== undefined && e.correlation_id !== f.correlationId) return false;
  if (f.traceId !== undefined && e.trace_id !== f.traceId) return false;
  if (f.requestId !== undefined && e.request_id !== f.requestId) return false;
  if (f.search !== undefined) {
    const s = f.search;
    const hit = [e.correlation_id, e.scope].some((v) => typeof v === 'string' && v.toLowerCase().includes(s));
    if (!hit) return false;
  }
  return true;
}

/** The admin listEvents filters, validated (spec listEvents: enums, trace_id pattern, search ≤ 128). */
function adminFilter(q: EventListQuery): EventFilter {
  const f: EventFilter = { bounds: { minMs: undefined, maxMs: undefined } };
  if (!blank(q.tenant_id)) f.tenantId = q.tenant_id!.trim();
  if (!blank(q.event_type)) {
    const t = q.event_type!.trim();
    if (!isKnownEventType(t) && !CUSTOM_TYPE.test(t)) throw invalid('event_type', t, 'unknown event type');
    f.eventType = t;
  }
  if (!blank(q.category)) {
    const c = q.category!.trim();
    if (!(EVENT_CATEGORIES as readonly string[]).includes(c)) throw invalid('category', c, `allowed: ${EVENT_CATEGORIES.join(', ')}`);
    f.category = c;
  }
  if (!blank(q.trace_id)) {
    if (!TRACE_ID.test(q.trace_id!)) throw invalid('trace_id', q.trace_id!, 'expected 32 lowercase hex characters');
    f.traceId = q.trace_id!;
  }
  if (!blank(q.request_id)) f.requestId = q.request_id!;
  if (!blank(q.correlation_id)) f.correlationId = q.correlation_id!;
  if (!blank(q.scope)) f.scopePrefix = q.scope!.trim().toLowerCase();
  f.bounds = timeBounds(q.from, q.to);
  if (!blank(q.search)) {
    const s = q.search!.trim();
    if (s.length > SEARCH_MAX_CHARS) throw invalid('search', `${s.slice(0, 16)}…`, `longer than ${SEARCH_MAX_CHARS} characters`);
    f.search = s.toLowerCase();
  }
  return f;
}

/**
 * The listTenantEvents filters: only tenant-accessible types and categories (budget, reservation,
 * tenant) may be asked for; an admin-only or unknown one is a 400, and an unfiltered query still
 * returns only tenant-accessible events (spec listTenantEvents).
 */
function tenantFilter(tenantId: string, q: TenantEventListQuery): EventFilter {
  const f: EventFilter = { tenantId, visibleCategories: TENANT_CATEGORIES, bounds: { minMs: undefined, maxMs: undefined } };
  if (!blank(q.event_type)) {
    const t = q.event_type!.trim();
    if (!isKnownEventType(t)) throw new CyclesError('INVALID_REQUEST', `Invalid value for parameter 'event_type': Unknown event type: ${t}`);
    if (!TENANT_CATEGORIES.includes(categoryOfType(t))) {
      throw new CyclesError('INVALID_REQUEST', `Invalid value for parameter 'event_type': ${t} is admin-only; tenant keys may read budget.*, reservation.* and tenant.* events`);
    }
    f.eventType = t;
  }
  if (!blank(q.category)) {
    const c = q.category!.trim();
    if (!(EVENT_CATEGORIES as readonly string[]).includes(c)) throw invalid('category', c, `allowed: ${TENANT_CATEGORIES.join(', ')}`);
    if (!TENANT_CATEGORIES.includes(c)) {
      throw new CyclesError('INVALID_REQUEST', `Invalid value for parameter 'category': ${c} is admin-only; tenant keys may read ${TENANT_CATEGORIES.join(', ')}`);
    }
    f.category = c;
  }
  if (!blank(q.correlation_id)) f.correlationId = q.correlation_id!;
  if (!blank(q.scope)) f.scopePrefix = q.scope!.trim().toLowerCase();
  f.bounds = timeBounds(q.from, q.to);
  return f;
}

function sortSpec(sortBy: string | undefined, sortDir: string | undefined): { by: string; dir: 'asc' | 'desc' } {
  const by = blank(sortBy) ? 'timestamp' : sortBy!.trim();
  if (!(EVENT_SORTS as readonly string[]).includes(by)) throw invalid('sort_by', by, `allowed: ${EVENT_SORTS.join(', ')}`);
  const dir = blank(sortDir) ? 'desc' : sortDir!.trim().toLowerCase();
  if (dir !== 'asc' && dir !== 'desc') throw invalid('sort_dir', sortDir!, 'allowed: asc, desc');
  return { by, dir };
}

function parseEvent(raw: string | undefined): WireEvent | undefined {
  if (raw === undefined) return undefined;
  try {
    const e = JSON.parse(raw) as WireEvent;
    return e !== null && typeof e === 'object' && typeof e.event_id === 'string' ? e : undefined;
  } catch {
    return undefined;
  }
}

type Position = [id: string, score: number];

function comparePositions(a: Position, b: Position): number {
  if (a[1] !== b[1]) return a[1] - b[1];
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}

function page<Row>(wrapper: string, rows: Row[], next: string | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = { [wrapper]: rows };
  if (next !== undefined) out.next_cursor = next;
  out.has_more = next !== undefined;
  return out;
}

// ------------------------------------------------------------------ deliveries

const DELIVERY_STRINGS = ['event_type', 'status', 'attempted_at', 'completed_at'] as const;
const DELIVERY_INTEGERS = ['attempts', 'response_status', 'response_time_ms'] as const;

function present(v: string | undefined): v is string {
  return v !== undefined && v !== '';
}

/**
 * The WebhookDelivery wire shape of a stored delivery hash: numbers as numbers, the boolean as a
 * boolean, absent and empty fields omitted, internal fields (owner, tenant_id, attempted_at_ms)
 * left out. `next_retry_at` is shown only while the delivery is RETRYING (spec WebhookDelivery).
 */
export function deliveryView(rec: Record<string, string>): Record<string, unknown> {
  const out: Record<string, unknown> = {
    delivery_id: rec.delivery_id ?? '',
    subscription_id: rec.subscription_id ?? '',
    event_id: rec.event_id ?? '',
  };
  for (const f of DELIVERY_STRINGS) if (present(rec[f])) out[f] = rec[f];
  if (out.attempted_at === undefined && present(rec.attempted_at_ms) && Number.isFinite(Number(rec.attempted_at_ms))) {
    out.attempted_at = new Date(Number(rec.attempted_at_ms)).toISOString();
  }
  for (const f of DELIVERY_INTEGERS) {
    const n = present(rec[f]) ? Number(rec[f]) : NaN;
    if (Number.isFinite(n)) out[f] = Math.trunc(n);
  }
  if (present(rec.error_message)) out.error_message = rec.error_message;
  if (rec.status === 'RETRYING' && present(rec.next_retry_at)) out.next_retry_at = rec.next_retry_at;
  if (present(rec.trace_id)) out.trace_id = rec.trace_id;
  if (present(rec.trace_flags)) out.trace_flags = rec.trace_flags;
  const inbound = rec.traceparent_inbound_valid;
  if (inbound === 'true' || inbound === '1') out.traceparent_inbound_valid = true;
  else if (inbound === 'false' || inbound === '0') out.traceparent_inbound_valid = false;
  return out;
}

// ------------------------------------------------------------------ listings

export class EventService {
  constructor(private readonly store: EventStore) {}

  /** GET /v1/admin/events/{event_id}. */
  async getEvent(eventId: string): Promise<WireEvent> {
    const e = parseEvent(await this.store.getEvent(eventId));
    if (e === undefined) throw new CyclesError('EVENT_NOT_FOUND', `Event not found: ${eventId}`);
    return e;
  }

  /** GET /v1/admin/events (admin key): every tenant's events, or one tenant's with tenant_id. */
  async listEvents(q: EventListQuery): Promise<Record<string, unknown>> {
    const filter = adminFilter(q);
    const sort = sortSpec(q.sort_by, q.sort_dir);
    const limit = clampLimit(q.limit);
    if (filter.tenantId !== undefined && filter.tenantId !== SYSTEM_OWNER && !TENANT_ID.test(filter.tenantId)) {
      // Not a tenant id any event can carry: nothing matches (and no odd key name is built).
      return page('events', [], undefined);
    }
    const index: EventIndex = filter.tenantId !== undefined ? { kind: 'tenant', tenantId: filter.tenantId } : { kind: 'all' };
    return this.list(index, filter, sort, limit, q.cursor);
  }

  /** GET /v1/events (tenant key with events:read): the key's tenant, tenant-accessible events only. */
  async listTenantEvents(auth: AuthContext, q: TenantEventListQuery): Promise<Record<string, unknown>> {
    if (auth.kind !== 'tenant') throw new CyclesError('UNAUTHORIZED', 'Missing X-Cycles-API-Key header');
    const filter = tenantFilter(auth.tenantId, q);
    return this.list({ kind: 'tenant', tenantId: auth.tenantId }, filter, { by: 'timestamp', dir: 'desc' }, clampLimit(q.limit), q.cursor);
  }

  private async list(
    index: EventIndex,
    filter: EventFilter,
    sort: { by: string; dir: 'asc' | 'desc' },
    limit: number,
    cursor: string | undefined,
  ): Promise<Record<string, unknown>> {
    const hasCursor = !blank(cursor);
    // A small correlation set is the candidate list itself, ordered like the index.
    let candidates: Position[] | undefined;
    if (filter.correlationId !== undefined && (await this.store.correlationSize(filter.correlationId)) <= CORRELATION_SET_CAP) {
      const lo = filter.bounds.minMs ?? -Infinity;
      const hi = filter.bounds.maxMs ?? Infinity;
      candidates = (await this.store.correlationPositions(filter.correlationId, index))
        .filter((p): p is Position => p[1] !== undefined && p[1] >= lo && p[1] <= hi);
    }
    if (sort.by !== 'timestamp') return this.sorted(index, filter, sort, limit, hasCursor ? cursor : undefined, candidates);

    const sign = sort.dir === 'asc' ? 1 : -1;
    candidates?.sort((a, b) => sign * comparePositions(a, b));
    let start: Position | undefined;
    if (hasCursor) {
      const score = candidates !== undefined
        ? candidates.find((p) => p[0] === cursor)?.[1]
        : await this.store.eventScore(index, cursor!);
      if (score === undefined) throw staleCursor();
      start = [cursor!, score];
    }
    const fetch = candidates !== undefined
      ? async (after: Position | undefined, count: number): Promise<Position[]> => {
        const from = after === undefined ? 0 : candidates!.findIndex((p) => p[0] === after[0]) + 1;
        return candidates!.slice(from, from + count);
      }
      : async (after: Position | undefined, count: number): Promise<Position[]> =>
        this.store.eventWindow(index, sort.dir, after && { id: after[0], score: after[1] }, count, filter.bounds);
    const { rows, last, exhausted } = await scanIndex<Position, WireEvent, WireEvent>({
      start,
      limit,
      budget: EVENT_SCAN_BUDGET,
      window: SCAN_WINDOW,
      fetch,
      hydrate: async (positions) => (await this.store.getEvents(positions.map(([id]) => id))).map(parseEvent),
      accept: (e) => (eventMatches(e, filter) ? e : undefined),
    });
    return page('events', rows, !exhausted && last !== undefined ? last[0] : undefined);
  }

  /** sort_by other than timestamp: read every candidate (capped), filter, sort, cut after the cursor row. */
  private async sorted(
    index: EventIndex,
    filter: EventFilter,
    sort: { by: string; dir: 'asc' | 'desc' },
    limit: number,
    cursor: string | undefined,
    fromCorrelation: Position[] | undefined,
  ): Promise<Record<string, unknown>> {
    let positions = fromCorrelation;
    if (positions === undefined) {
      const total = await this.store.eventCount(index, filter.bounds);
      if (total > EVENT_SORT_CANDIDATE_CAP) {
        throw new CyclesError(
          'LIMIT_EXCEEDED',
          `More than ${EVENT_SORT_CANDIDATE_CAP} events to sort by ${sort.by}; narrow the query with tenant_id or from/to, or sort by timestamp`,
          { total_candidates: total },
          400,
        );
      }
      positions = await this.store.eventPositions(index, filter.bounds, EVENT_SORT_CANDIDATE_CAP);
    }
    const rows: Array<{ value: string; event: WireEvent }> = [];
    for (let i = 0; i < positions.length; i += SCAN_WINDOW) {
      const batch = await this.store.getEvents(positions.slice(i, i + SCAN_WINDOW).map(([id]) => id));
      for (const raw of batch) {
        const e = parseEvent(raw);
        if (e !== undefined && eventMatches(e, filter)) rows.push({ value: String(e[sort.by] ?? ''), event: e });
      }
    }
    const sign = sort.dir === 'asc' ? 1 : -1;
    rows.sort((a, b) => {
      if (a.value !== b.value) return sign * (a.value < b.value ? -1 : 1);
      return sign * (a.event.event_id < b.event.event_id ? -1 : a.event.event_id > b.event.event_id ? 1 : 0);
    });
    let start = 0;
    if (cursor !== undefined) {
      const at = rows.findIndex((r) => r.event.event_id === cursor);
      if (at === -1) throw staleCursor();
      start = at + 1;
    }
    const slice = rows.slice(start, start + limit);
    const more = start + limit < rows.length && slice.length > 0;
    return page('events', slice.map((r) => r.event), more ? slice[slice.length - 1]!.event.event_id : undefined);
  }

  /**
   * GET /v1/admin/webhooks/{id}/deliveries and GET /v1/webhooks/{id}/deliveries: one subscription's
   * deliveries, newest first by attempted_at. A subscription that does not exist, or (tenant key)
   * belongs to another tenant, is 404 WEBHOOK_NOT_FOUND.
   */
  async listDeliveries(auth: AuthContext, subscriptionId: string, q: DeliveryListQuery): Promise<Record<string, unknown>> {
    let status: string | undefined;
    if (!blank(q.status)) {
      status = q.status!.trim();
      if (!(DELIVERY_STATUSES as readonly string[]).includes(status)) throw invalid('status', status, `allowed: ${DELIVERY_STATUSES.join(', ')}`);
    }
    const bounds = timeBounds(q.from, q.to);
    const limit = clampLimit(q.limit);
    const ownerId = ownerOfSubscriptionId(subscriptionId);
    const visible = ownerId !== undefined && (auth.kind === 'admin' || auth.tenantId === ownerId) &&
      (await this.store.subscriptionExists(ownerId, subscriptionId));
    if (!visible) throw new CyclesError('WEBHOOK_NOT_FOUND', `Webhook subscription not found: ${subscriptionId}`);
    const owner = ownerId!;

    let start: Position | undefined;
    if (!blank(q.cursor)) {
      const score = await this.store.deliveryScore(owner, subscriptionId, q.cursor!);
      if (score === undefined) throw staleCursor();
      start = [q.cursor!, score];
    }
    const { rows, last, exhausted } = await scanIndex<Position, RecordFields, Record<string, unknown>>({
      start,
      limit,
      budget: DELIVERY_SCAN_BUDGET,
      window: SCAN_WINDOW,
      fetch: (after, count) => this.store.deliveryWindow(owner, subscriptionId, after && { id: after[0], score: after[1] }, count, bounds),
      hydrate: (positions) => this.store.getDeliveries(owner, positions.map(([id]) => id)),
      accept: (rec) => (status === undefined || rec.status === status ? deliveryView(rec) : undefined),
    });
    return page('deliveries', rows, !exhausted && last !== undefined ? last[0] : undefined);
  }
}

// ------------------------------------------------------------------ overview

/** The window of event_counts, recent_denials and recent_expiries (spec AdminOverviewResponse). */
export const OVERVIEW_EVENT_WINDOW_SECONDS = 3600;
/** Length of every top list. */
const TOP_N = 10;
/**
 * Bounds of one overview. The counts cover the first OVERVIEW_TENANT_CAP tenants of the registry
 * (oldest first) and at most OVERVIEW_BUDGET_CAP of their ledgers, the first OVERVIEW_WEBHOOK_CAP
 * subscriptions (id order), and for by_category and the recent lists the newest
 * OVERVIEW_EVENT_CAP events of the window (event_counts.total_recent is always exact: one ZCOUNT).
 * Beyond a cap the numbers are partial rather than the request unbounded; no deployment this
 * plane is sized for comes near them.
 */
export const OVERVIEW_TENANT_CAP = 10_000;
export const OVERVIEW_BUDGET_CAP = 20_000;
export const OVERVIEW_WEBHOOK_CAP = 10_000;
export const OVERVIEW_EVENT_CAP = 5000;
/** Tenants whose ledgers are read concurrently. */
const TENANT_BATCH = 32;
/** Tenant ids read per round trip from the registry. */
const REGISTRY_WINDOW = 1000;

function count(v: string | undefined): number {
  const n = Number(v ?? 0);
  return Number.isFinite(n) ? n : 0;
}

export class OverviewService {
  constructor(
    private readonly events: EventStore,
    private readonly listing: ListingStore,
    private readonly webhooks: WebhookStore,
  ) {}

  /** GET /v1/admin/overview: one bounded pass over the registries and the recent event window. */
  async overview(nowMs: number = Date.now()): Promise<Record<string, unknown>> {
    const [tenants, webhooks, events] = await Promise.all([this.tenantsAndBudgets(), this.webhookSection(), this.eventSection(nowMs)]);
    return {
      as_of: new Date(nowMs).toISOString(),
      event_window_seconds: OVERVIEW_EVENT_WINDOW_SECONDS,
      tenant_counts: tenants.tenantCounts,
      budget_counts: tenants.budgetCounts,
      over_limit_scopes: tenants.overLimit,
      debt_scopes: tenants.debt,
      webhook_counts: webhooks.counts,
      failing_webhooks: webhooks.failing,
      event_counts: events.counts,
      recent_denials: events.denials,
      recent_expiries: events.expiries,
      ...(Object.keys(events.denialsByReason).length > 0 ? { recent_denials_by_reason: events.denialsByReason } : {}),
    };
  }

  private async tenantsAndBudgets() {
    const tenantCounts = { total: 0, active: 0, suspended: 0, closed: 0 };
    const ids: string[] = [];
    while (ids.length < OVERVIEW_TENANT_CAP) {
      const want = Math.min(REGISTRY_WINDOW, OVERVIEW_TENANT_CAP - ids.length);
      const window = await this.listing.tenantIdsByRank(ids.length, want);
      if (window.length === 0) break;
      ids.push(...window);
      const recs = await this.listing.getTenants(window);
      for (const rec of recs) {
        if (!rec) continue;
        tenantCounts.total += 1;
        if (rec.status === 'ACTIVE') tenantCounts.active += 1;
        else if (rec.status === 'SUSPENDED') tenantCounts.suspended += 1;
        else if (rec.status === 'CLOSED') tenantCounts.closed += 1;
      }
      if (window.length < want) break;
    }

    const budgetCounts = { total: 0, active: 0, frozen: 0, closed: 0, over_limit: 0, with_debt: 0, by_unit: {} as Record<string, number> };
    const overLimit: Record<string, unknown>[] = [];
    const debt: Record<string, unknown>[] = [];
    let budgetsLeft = OVERVIEW_BUDGET_CAP;
    const visit = (rec: RecordFields): void => {
      budgetCounts.total += 1;
      const unit = rec.unit ?? '';
      budgetCounts.by_unit[unit] = (budgetCounts.by_unit[unit] ?? 0) + 1;
      if (rec.status === 'ACTIVE') budgetCounts.active += 1;
      else if (rec.status === 'FROZEN') budgetCounts.frozen += 1;
      else if (rec.status === 'CLOSED') budgetCounts.closed += 1;
      const allocated = count(rec.allocated);
      const owed = count(rec.debt);
      const remaining = allocated - count(rec.spent) - count(rec.reserved) - owed;
      if (rec.over_limit === '1') {
        budgetCounts.over_limit += 1;
        if (overLimit.length < TOP_N) overLimit.push({ scope: rec.scope, unit, allocated, remaining, debt: owed });
      }
      if (owed > 0) {
        budgetCounts.with_debt += 1;
        if (debt.length < TOP_N) debt.push({ scope: rec.scope, unit, debt: owed, overdraft_limit: count(rec.overdraft_limit) });
      }
    };
    const readTenant = async (tenantId: string): Promise<void> => {
      let after: string | undefined;
      // Bounded by the shared ledger budget: each window claims its share before reading.
      while (budgetsLeft > 0) {
        const take = Math.min(SCAN_WINDOW, budgetsLeft);
        budgetsLeft -= take;
        const members = await this.listing.budgetMembers(tenantId, after, undefined, take);
        budgetsLeft += take - members.length;
        if (members.length === 0) return;
        after = members[members.length - 1];
        for (const rec of await this.listing.getBudgets(tenantId, members)) if (rec) visit(rec);
        if (members.length < take) return;
      }
    };
    for (let i = 0; i < ids.length && budgetsLeft > 0; i += TENANT_BATCH) {
      await Promise.all(ids.slice(i, i + TENANT_BATCH).map(readTenant));
    }
    return { tenantCounts, budgetCounts, overLimit, debt };
  }

  private async webhookSection() {
    const counts = { total: 0, active: 0, disabled: 0, with_failures: 0 };
    const failing: Record<string, unknown>[] = [];
    let after: string | undefined;
    for (let read = 0; read < OVERVIEW_WEBHOOK_CAP;) {
      const ids = await this.webhooks.ids(undefined, after, Math.min(SCAN_WINDOW, OVERVIEW_WEBHOOK_CAP - read));
      if (ids.length === 0) break;
      read += ids.length;
      after = ids[ids.length - 1];
      const recs = await Promise.all(ids.map((id) => {
        const owner = ownerOfSubscriptionId(id);
        return owner === undefined ? undefined : this.webhooks.get(owner, id);
      }));
      for (const rec of recs) {
        if (!rec) continue;
        counts.total += 1;
        if (rec.status === 'ACTIVE') counts.active += 1;
        else if (rec.status === 'DISABLED') counts.disabled += 1;
        const failures = count(rec.consecutive_failures);
        if (failures > 0) {
          counts.with_failures += 1;
          if (failing.length < TOP_N) {
            failing.push({
              subscription_id: rec.subscription_id, url: rec.url, consecutive_failures: failures,
              ...(present(rec.last_failure_at) ? { last_failure_at: rec.last_failure_at } : {}),
            });
          }
        }
      }
    }
    return { counts, failing };
  }

  private async eventSection(nowMs: number) {
    const bounds: ScoreBounds = { minMs: nowMs - OVERVIEW_EVENT_WINDOW_SECONDS * 1000 };
    const all: EventIndex = { kind: 'all' };
    const totalRecent = await this.events.eventCount(all, bounds);
    const byCategory: Record<string, number> = {};
    const denials: WireEvent[] = [];
    const expiries: WireEvent[] = [];
    const denialsByReason: Record<string, number> = {};
    let after: { id: string; score: number } | undefined;
    for (let read = 0; read < OVERVIEW_EVENT_CAP;) {
      const positions = await this.events.eventWindow(all, 'desc', after, Math.min(SCAN_WINDOW, OVERVIEW_EVENT_CAP - read), bounds);
      if (positions.length === 0) break;
      read += positions.length;
      const last = positions[positions.length - 1]!;
      after = { id: last[0], score: last[1] };
      for (const raw of await this.events.getEvents(positions.map(([id]) => id))) {
        const e = parseEvent(raw);
        if (e === undefined) continue;
        byCategory[e.category] = (byCategory[e.category] ?? 0) + 1;
        if (e.event_type === 'reservation.denied') {
          if (denials.length < TOP_N) denials.push(e);
          const reason = e.data?.reason_code;
          if (typeof reason === 'string' && reason !== '') denialsByReason[reason] = (denialsByReason[reason] ?? 0) + 1;
        } else if (e.event_type === 'reservation.expired' && expiries.length < TOP_N) {
          expiries.push(e);
        }
      }
    }
    return { counts: { total_recent: totalRecent, by_category: byCategory }, denials, expiries, denialsByReason };
  }
}
