import type { RuntimeStore, ReservationRecord } from '../store/runtime-store.js';
import type { AuthContext } from './auth.js';
import { canonicalJson, payloadHash } from './canonical.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import { CyclesError } from './errors.js';
import { reservationIdOf } from './ids.js';
import { balanceView, reservationView } from './runtime.js';

/**
 * GET /v1/reservations and GET /v1/balances, served from per-tenant indexes (never a keyspace
 * scan). Every scan has a named bound, so one request costs at most a fixed amount of Redis work.
 */

/** Rows examined per unsorted page before answering with a partial page and a cursor. */
export const UNSORTED_SCAN_BUDGET = 5000;
/** Rows a sorted listing materialises (the reference's SORTED_HYDRATE_CAP). */
export const SORTED_HYDRATE_CAP = 2000;
/** Index entries read per round trip while scanning (at most), and the first window (at least). */
const SCAN_WINDOW = 250;
const MIN_WINDOW = 16;
/** Budget ledgers examined per balances page. */
const BALANCE_SCAN_BUDGET = 5000;

const SUBJECT_LEVELS = ['workspace', 'app', 'workflow', 'agent', 'toolset'] as const;

export interface ListQuery {
  idempotency_key?: string;
  status?: string;
  tenant?: string;
  workspace?: string;
  app?: string;
  workflow?: string;
  agent?: string;
  toolset?: string;
  from?: string;
  to?: string;
  expires_from?: string;
  expires_to?: string;
  finalized_from?: string;
  finalized_to?: string;
  sort_by?: string;
  sort_dir?: 'asc' | 'desc';
  include?: string;
  limit?: number;
  cursor?: string;
}

interface Window {
  lo?: number;
  hi?: number;
}

function parseInstant(name: string, value: string | undefined): number | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const ms = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(ms)) {
    throw new CyclesError('INVALID_REQUEST', `Invalid value for parameter '${name}': ${value}`);
  }
  return ms;
}

function parseWindow(loName: string, lo: string | undefined, hiName: string, hi: string | undefined): Window {
  const w: Window = { lo: parseInstant(loName, lo), hi: parseInstant(hiName, hi) };
  if (w.lo !== undefined && w.hi !== undefined && w.lo > w.hi) {
    throw new CyclesError('INVALID_REQUEST', `'${loName}' must not be after '${hiName}'`);
  }
  return w;
}

function inWindow(value: number | undefined, w: Window): boolean {
  if (w.lo === undefined && w.hi === undefined) return true;
  if (value === undefined) return false;
  return (w.lo === undefined || value >= w.lo) && (w.hi === undefined || value <= w.hi);
}

function resolveTenant(auth: AuthContext, tenant: string | undefined): string {
  if (auth.kind === 'admin') {
    if (tenant === undefined || tenant === '') {
      throw new CyclesError('INVALID_REQUEST', 'tenant query parameter is required when using admin key authentication');
    }
    return tenant;
  }
  if (tenant !== undefined && tenant !== '' && tenant !== auth.tenantId) {
    throw new CyclesError('FORBIDDEN', 'tenant query parameter does not match the tenant of the API key');
  }
  return auth.tenantId;
}

type SortValue = string | number;

function sortValue(sortBy: string, id: string, rec: ReservationRecord): SortValue {
  switch (sortBy) {
    case 'reservation_id':
      return id;
    case 'tenant':
      return rec.tenant ?? '';
    case 'scope_path':
      return rec.scope_path ?? '';
    case 'status':
      return rec.status ?? '';
    case 'reserved':
      return Number(rec.estimate);
    case 'expires_at_ms':
      return Number(rec.expires);
    default:
      return Number(rec.created);
  }
}

function compare(a: [SortValue, string], b: [SortValue, string]): number {
  if (a[0] < b[0]) return -1;
  if (a[0] > b[0]) return 1;
  return a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0;
}

/**
 * One bounded scan over an index: reads windows of positions after `start`, hydrates them,
 * keeps what `accept` returns, and stops at `limit` rows or after `budget` positions. Reports
 * the last position examined and whether the index had nothing more past it.
 */
export async function scanIndex<P, R, Row>(opts: {
  start: P | undefined;
  limit: number;
  budget: number;
  window: number;
  fetch: (after: P | undefined, count: number) => Promise<P[]>;
  hydrate: (positions: P[]) => Promise<Array<R | undefined>>;
  accept: (rec: R, position: P) => Row | undefined;
}): Promise<{ rows: Row[]; last: P | undefined; exhausted: boolean }> {
  const rows: Row[] = [];
  let last = opts.start;
  let examined = 0;
  // Read only what the page still needs, growing the window while filters keep rejecting rows.
  for (let round = 0; rows.length < opts.limit && examined < opts.budget; round += 1) {
    const wanted = Math.max(opts.limit - rows.length + 1, MIN_WINDOW * 2 ** round);
    const positions = await opts.fetch(last, Math.min(opts.window, opts.budget - examined, wanted));
    if (positions.length === 0) return { rows, last, exhausted: true };
    const recs = await opts.hydrate(positions);
    for (let i = 0; i < positions.length; i += 1) {
      examined += 1;
      last = positions[i];
      const rec = recs[i];
      const row = rec === undefined ? undefined : opts.accept(rec, positions[i]!);
      if (row !== undefined) rows.push(row);
      if (rows.length === opts.limit) break;
    }
  }
  // Only promise more when the index really has entries past the last position.
  const exhausted = last === undefined || (await opts.fetch(last, 1)).length === 0;
  return { rows, last, exhausted };
}

export class ListingService {
  constructor(private readonly store: RuntimeStore) {}

  async listReservations(auth: AuthContext, q: ListQuery): Promise<Record<string, unknown>> {
    const tenantId = resolveTenant(auth, q.tenant);
    const created = parseWindow('from', q.from, 'to', q.to);
    const expires = parseWindow('expires_from', q.expires_from, 'expires_to', q.expires_to);
    const finalized = parseWindow('finalized_from', q.finalized_from, 'finalized_to', q.finalized_to);
    const tokens = new Set((q.include ?? '').split(',').map((s) => s.trim()));
    const include = { metadata: tokens.has('metadata'), committedMetadata: tokens.has('committed_metadata') };
    const limit = q.limit ?? 50;

    const matches = (rec: ReservationRecord): boolean => {
      if (rec.tenant !== tenantId) return false;
      if (q.status && rec.status !== q.status) return false;
      if (!inWindow(Number(rec.created), created) || !inWindow(Number(rec.expires), expires)) return false;
      const fin = (rec.status === 'COMMITTED' || rec.status === 'RELEASED') && rec.finalized ? Number(rec.finalized) : undefined;
      if (!inWindow(fin, finalized)) return false;
      const wanted = SUBJECT_LEVELS.filter((l) => q[l] !== undefined && q[l] !== '');
      if (wanted.length > 0) {
        const subject = JSON.parse(rec.subject ?? '{}') as Record<string, string>;
        for (const level of wanted) if (subject[level] !== q[level]) return false;
      }
      return true;
    };

    if (q.idempotency_key !== undefined && q.idempotency_key !== '') {
      const short = await this.store.reservationIdByKey(tenantId, q.idempotency_key);
      const rec = short ? await this.store.getReservation(tenantId, short) : undefined;
      // The index maps a digest of the key; the record says whether it is this key's reservation.
      const rows = short && rec && rec.idem === q.idempotency_key && matches(rec)
        ? [reservationView(reservationIdOf(tenantId, short), rec, include)]
        : [];
      return { reservations: rows, has_more: false };
    }

    if (q.sort_by) return this.sorted(tenantId, q, limit, matches, include, { created, expires, finalized });
    return this.unsorted(tenantId, q, limit, matches, include);
  }

  /** Default order: newest first by created_at, cursor = the last reservation-log entry examined. */
  private async unsorted(
    tenantId: string,
    q: ListQuery,
    limit: number,
    matches: (rec: ReservationRecord) => boolean,
    include: { metadata: boolean; committedMetadata: boolean },
  ): Promise<Record<string, unknown>> {
    let position: string | undefined;
    if (q.cursor) {
      const c = decodeCursor<{ m?: string; x?: string }>(q.cursor);
      if (c.m !== 'u' || typeof c.x !== 'string' || !/^\d+-\d+$/.test(c.x)) {
        throw new CyclesError('INVALID_REQUEST', 'cursor is not valid for this listing; restart pagination without a cursor');
      }
      position = c.x;
    }
    type Position = [string, string];
    const { rows, last, exhausted } = await scanIndex<Position, ReservationRecord, Record<string, unknown>>({
      start: position ? ['', position] : undefined,
      limit,
      budget: UNSORTED_SCAN_BUDGET,
      window: SCAN_WINDOW,
      fetch: (after, count) => this.store.reservationLogWindow(tenantId, after?.[1], count),
      hydrate: (positions) => this.store.getReservations(tenantId, positions.map(([short]) => short)),
      accept: (rec, [short]) => (matches(rec) ? reservationView(reservationIdOf(tenantId, short), rec, include) : undefined),
    });
    const out: Record<string, unknown> = { reservations: rows };
    if (!exhausted && last) {
      out.next_cursor = encodeCursor({ m: 'u', x: last[1] });
      out.has_more = true;
    } else {
      out.has_more = false;
    }
    return out;
  }

  /** sort_by given: materialise up to SORTED_HYDRATE_CAP matches, sort, page by (value, id). */
  private async sorted(
    tenantId: string,
    q: ListQuery,
    limit: number,
    matches: (rec: ReservationRecord) => boolean,
    include: { metadata: boolean; committedMetadata: boolean },
    windows: Record<string, Window>,
  ): Promise<Record<string, unknown>> {
    const sortBy = q.sort_by!;
    const dir = q.sort_dir ?? 'desc';
    const binding = payloadHash(
      canonicalJson({
        sortBy, dir, tenantId, status: q.status ?? null, windows,
        subject: SUBJECT_LEVELS.map((l) => (q[l] === '' ? null : (q[l] ?? null))),
      }),
    );
    let after: [SortValue, string] | undefined;
    if (q.cursor) {
      const c = decodeCursor<{ m?: string; b?: string; v?: SortValue; id?: string }>(q.cursor);
      if (c.m !== 's' || c.b !== binding || c.v === undefined || typeof c.id !== 'string') {
        throw new CyclesError('INVALID_REQUEST', 'cursor was issued for other sort or filter parameters; restart pagination without a cursor');
      }
      after = [c.v, c.id];
    }
    type Position = [string, string];
    const { rows: all } = await scanIndex<Position, ReservationRecord, { key: [SortValue, string]; id: string; rec: ReservationRecord }>({
      start: undefined,
      limit: SORTED_HYDRATE_CAP,
      budget: SORTED_HYDRATE_CAP * 10,
      window: SCAN_WINDOW,
      fetch: (after, count) => this.store.reservationLogWindow(tenantId, after?.[1], count),
      hydrate: (positions) => this.store.getReservations(tenantId, positions.map(([short]) => short)),
      accept: (rec, [short]) => {
        if (!matches(rec)) return undefined;
        const id = reservationIdOf(tenantId, short);
        return { key: [sortValue(sortBy, id, rec), id], id, rec };
      },
    });
    const sign = dir === 'asc' ? 1 : -1;
    all.sort((a, b) => sign * compare(a.key, b.key));
    let start = 0;
    if (after) {
      const pos = after;
      start = all.findIndex((row) => sign * compare(row.key, pos) > 0);
      if (start === -1) start = all.length;
    }
    const page = all.slice(start, start + limit);
    const out: Record<string, unknown> = { reservations: page.map((row) => reservationView(row.id, row.rec, include)) };
    const last = page[page.length - 1];
    if (start + limit < all.length && last) {
      out.next_cursor = encodeCursor({ m: 's', b: binding, v: last.key[0], id: last.key[1] });
      out.has_more = true;
    } else {
      out.has_more = false;
    }
    return out;
  }

  async balances(auth: AuthContext, q: Record<string, string | number | boolean | undefined>): Promise<Record<string, unknown>> {
    if (auth.kind !== 'tenant') throw new CyclesError('UNAUTHORIZED', 'Missing X-Cycles-API-Key header');
    const given = ['tenant', ...SUBJECT_LEVELS].filter((l) => typeof q[l] === 'string' && q[l] !== '');
    if (given.length === 0) {
      throw new CyclesError('INVALID_REQUEST', 'At least one subject filter (tenant, workspace, app, workflow, agent, toolset) is required');
    }
    const tenantId = resolveTenant(auth, q.tenant as string | undefined);
    const segments = SUBJECT_LEVELS.filter((l) => typeof q[l] === 'string' && q[l] !== '').map(
      (l) => `${l}:${String(q[l]).toLowerCase()}`,
    );
    const limit = typeof q.limit === 'number' ? q.limit : 50;
    let after: string | undefined;
    if (typeof q.cursor === 'string' && q.cursor !== '') {
      const c = decodeCursor<{ m?: string }>(q.cursor);
      if (typeof c.m !== 'string') throw new CyclesError('INVALID_REQUEST', 'cursor is not valid; restart pagination without a cursor');
      after = c.m;
    }
    const { rows, last, exhausted } = await scanIndex<string, Record<string, string>, Record<string, unknown>>({
      start: after,
      limit,
      budget: BALANCE_SCAN_BUDGET,
      window: SCAN_WINDOW,
      fetch: (from, count) => this.store.budgetMembers(tenantId, from, count),
      hydrate: (members) =>
        Promise.all(
          members.map((m) => {
            const bar = m.lastIndexOf('|');
            const scopeSegments = m.slice(0, bar).split('/');
            // Filter on the member string first: only matching ledgers are read.
            if (!segments.every((seg) => scopeSegments.includes(seg))) return undefined;
            return this.store.getBudget(tenantId, m.slice(0, bar), m.slice(bar + 1));
          }),
        ),
      accept: (rec) => balanceView(rec),
    });
    const out: Record<string, unknown> = { balances: rows };
    if (!exhausted && last !== undefined) {
      out.next_cursor = encodeCursor({ m: last });
      out.has_more = true;
    } else {
      out.has_more = false;
    }
    return out;
  }
}
