import type { AdminStore } from '../store/admin-store.js';
import { newId } from './ids.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import { CyclesError } from './errors.js';
import type { AuthContext } from './auth.js';

/** One audit row (AuditLogEntry wire shape). */
export interface AuditEntry {
  log_id: string;
  timestamp: string;
  tenant_id: string;
  key_id?: string;
  user_agent?: string;
  source_ip?: string;
  operation: string;
  resource_type?: string;
  resource_id?: string;
  request_id?: string;
  trace_id?: string;
  status: number;
  error_code?: string;
  actor_type?: string;
  metadata?: Record<string, unknown>;
}

export interface AuditQuery {
  tenant_id?: string;
  key_id?: string;
  /** Comma lists (explode=false), OR within a list; at most MAX_LIST_ITEMS values each. */
  operation?: string;
  resource_type?: string;
  error_code?: string;
  error_code_exclude?: string;
  resource_id?: string;
  request_id?: string;
  trace_id?: string;
  status?: number;
  status_min?: number;
  status_max?: number;
  from?: string;
  to?: string;
  search?: string;
  limit?: number;
  cursor?: string;
}

/** A validated query: lists split and de-duplicated, the search lower-cased, dates in ms. */
interface AuditFilter {
  q: AuditQuery;
  operations?: Set<string>;
  resourceTypes?: Set<string>;
  errorCodes?: Set<string>;
  excludedCodes?: Set<string>;
  search?: string;
  fromMs?: number;
  toMs?: number;
}

/** Entries examined per audit page before answering with a partial page and a cursor. */
const AUDIT_SCAN_BUDGET = 5000;
const AUDIT_WINDOW = 200;
const AUDIT_MAX_ROUNDS = 50;
const DAY_MS = 86_400_000;
/** Retention of rows written for requests that failed before authentication (admin digest §2.8). */
export const UNAUTH_RETENTION_MS = 30 * DAY_MS;
/** Items a comma-list filter may carry, and the longest search string (spec listAuditLogs). */
const MAX_LIST_ITEMS = 25;
const MAX_SEARCH_LENGTH = 128;
/** Longest error message and path kept on a failure row. */
const MAX_ERROR_MESSAGE = 1024;
const MAX_PATH = 1024;

function commaList(name: string, value: string | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  const items = new Set(value.split(',').map((v) => v.trim()).filter((v) => v !== ''));
  if (items.size > MAX_LIST_ITEMS) throw new CyclesError('INVALID_REQUEST', `'${name}' accepts at most ${MAX_LIST_ITEMS} values`);
  return items.size === 0 ? undefined : items;
}

function instant(name: string, value: string | undefined): number | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const ms = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(ms)) throw new CyclesError('INVALID_REQUEST', `Invalid value for parameter '${name}': ${value}`);
  return ms;
}

/** Checks the combinations the schema cannot express (spec listAuditLogs 400 rules). */
function auditFilter(q: AuditQuery): AuditFilter {
  if (q.status !== undefined && (q.status_min !== undefined || q.status_max !== undefined)) {
    throw new CyclesError('INVALID_REQUEST', "'status' must not be combined with 'status_min' or 'status_max'");
  }
  if (q.status_min !== undefined && q.status_max !== undefined && q.status_min > q.status_max) {
    throw new CyclesError('INVALID_REQUEST', "'status_min' must not be greater than 'status_max'");
  }
  const search = q.search?.trim();
  if (search !== undefined && search.length > MAX_SEARCH_LENGTH) {
    throw new CyclesError('INVALID_REQUEST', `'search' must be at most ${MAX_SEARCH_LENGTH} characters`);
  }
  const f: AuditFilter = { q };
  const lists = [
    ['operation', 'operations'], ['resource_type', 'resourceTypes'], ['error_code', 'errorCodes'], ['error_code_exclude', 'excludedCodes'],
  ] as const;
  for (const [param, key] of lists) {
    const set = commaList(param, q[param]);
    if (set) f[key] = set;
  }
  if (search) f.search = search.toLowerCase();
  const fromMs = instant('from', q.from);
  const toMs = instant('to', q.to);
  if (fromMs !== undefined && toMs !== undefined && fromMs > toMs) throw new CyclesError('INVALID_REQUEST', "'from' must not be after 'to'");
  if (fromMs !== undefined) f.fromMs = fromMs;
  if (toMs !== undefined) f.toMs = toMs;
  return f;
}

function oneLine(text: string, max: number): string {
  return text.replace(/[\r\n]+/g, ' ').slice(0, max);
}

export interface FailedRequest {
  method: string;
  url: string;
  status: number;
  errorCode: string | undefined;
  errorMessage: string | undefined;
  auth: AuthContext | undefined;
  requestId: string;
  traceId: string | undefined;
  sourceIp: string | undefined;
  userAgent: string | undefined;
}

/**
 * The one audit row of a failed request (admin digest §2.8): the authenticated tenant,
 * `__admin__` for the admin key, `__unauth__` when it failed before authentication (kept for
 * UNAUTH_RETENTION_MS); operation `METHOD:path`.
 */
export function failureAuditEntry(r: FailedRequest): { entry: Omit<AuditEntry, 'log_id' | 'timestamp'>; ttlMs?: number } {
  const path = oneLine(r.url.split('?')[0] ?? '', MAX_PATH);
  const tenantId = r.auth === undefined ? '__unauth__' : r.auth.kind === 'admin' ? '__admin__' : r.auth.tenantId;
  const entry: Omit<AuditEntry, 'log_id' | 'timestamp'> = {
    tenant_id: tenantId,
    ...(r.auth?.kind === 'tenant' ? { key_id: r.auth.keyId } : {}),
    ...(r.userAgent ? { user_agent: oneLine(r.userAgent, 512) } : {}),
    ...(r.sourceIp ? { source_ip: r.sourceIp } : {}),
    operation: `${r.method}:${path}`,
    request_id: r.requestId,
    ...(r.traceId ? { trace_id: r.traceId } : {}),
    status: r.status,
    error_code: r.errorCode ?? (r.status >= 500 ? 'INTERNAL_ERROR' : 'INVALID_REQUEST'),
    metadata: { method: r.method, path, error_message: oneLine(r.errorMessage ?? '', MAX_ERROR_MESSAGE) },
  };
  return r.auth === undefined ? { entry, ttlMs: UNAUTH_RETENTION_MS } : { entry };
}

/** Audit log: writes never fail the request they describe; reads page newest first. */
export class AuditLog {
  constructor(
    private readonly store: AdminStore,
    readonly retentionMs: number = 400 * DAY_MS,
    private readonly onWriteError: (err: unknown) => void = () => {},
    /** Rows of requests that failed before authentication: their retention and the share kept. */
    readonly unauth: { retentionMs: number; sampleRate: number } = { retentionMs: UNAUTH_RETENTION_MS, sampleRate: 1 },
    private readonly random: () => number = Math.random,
  ) {}

  async write(entry: Omit<AuditEntry, 'log_id' | 'timestamp'>, nowMs: number = Date.now(), ttlMs?: number): Promise<void> {
    const unauthenticated = entry.tenant_id === '__unauth__';
    // Sampling bounds what an unauthenticated flood can write; a rate of 1 keeps every row.
    if (unauthenticated && this.unauth.sampleRate < 1 && this.random() >= this.unauth.sampleRate) return;
    const full: AuditEntry = { log_id: newId('log', 8), timestamp: new Date(nowMs).toISOString(), ...entry };
    const limit = unauthenticated ? Math.min(this.unauth.retentionMs, this.retentionMs) : this.retentionMs;
    try {
      await this.store.writeAudit(full.log_id, full.tenant_id, nowMs, JSON.stringify(full), Math.min(ttlMs ?? limit, limit));
    } catch (err) {
      this.onWriteError(err);
    }
  }

  async list(q: AuditQuery): Promise<Record<string, unknown>> {
    const filter = auditFilter(q);
    const limit = q.limit ?? 50;
    const index = q.tenant_id ?? '_all';
    let before: number | undefined = filter.toMs;
    let afterId: string | undefined;
    if (q.cursor) {
      const c = decodeCursor<{ s?: number; id?: string }>(q.cursor);
      if (typeof c.s !== 'number' || typeof c.id !== 'string') throw new CyclesError('INVALID_REQUEST', 'cursor is not valid');
      before = filter.toMs === undefined ? c.s : Math.min(c.s, filter.toMs);
      afterId = c.id;
    }
    const logs: AuditEntry[] = [];
    let examined = 0;
    let last: [string, number] | undefined;
    let exhausted = false;
    let skipping = afterId !== undefined;
    for (let round = 0; logs.length < limit && examined < AUDIT_SCAN_BUDGET && round < AUDIT_MAX_ROUNDS; round += 1) {
      const window = await this.store.auditIds(index, before, AUDIT_WINDOW, filter.fromMs);
      const fresh = window.filter(([id]) => {
        if (!skipping) return true;
        if (id === afterId) {
          skipping = false;
          return false;
        }
        return false;
      });
      // If the cursor entry has vanished (retention), continue from its score instead.
      const rows = skipping ? window.filter(([, s]) => s < (before ?? Infinity)) : fresh;
      skipping = false;
      if (window.length === 0) {
        exhausted = true;
        break;
      }
      const docs = await this.store.auditEntries(rows.map(([id]) => id));
      for (let i = 0; i < rows.length; i += 1) {
        examined += 1;
        last = rows[i];
        const doc = docs[i];
        if (!doc) continue;
        const e = JSON.parse(doc) as AuditEntry;
        if (matches(e, filter)) logs.push(e);
        if (logs.length === limit) break;
      }
      if (window.length < AUDIT_WINDOW && logs.length < limit) {
        exhausted = true;
        break;
      }
      if (last) {
        before = last[1];
        afterId = last[0];
        skipping = true;
      }
    }
    const out: Record<string, unknown> = { logs };
    if (!exhausted && last) {
      out.next_cursor = encodeCursor({ s: last[1], id: last[0] });
      out.has_more = true;
    } else {
      out.has_more = false;
    }
    return out;
  }
}

function matches(e: AuditEntry, f: AuditFilter): boolean {
  const q = f.q;
  if (q.key_id && e.key_id !== q.key_id) return false;
  if (f.operations && !f.operations.has(e.operation)) return false;
  if (f.resourceTypes && !f.resourceTypes.has(e.resource_type ?? '')) return false;
  // Success rows have no error_code: they never match a code and always pass an exclusion.
  if (f.errorCodes && (e.error_code === undefined || !f.errorCodes.has(e.error_code))) return false;
  if (f.excludedCodes && e.error_code !== undefined && f.excludedCodes.has(e.error_code)) return false;
  if (q.resource_id && e.resource_id !== q.resource_id) return false;
  if (q.request_id && e.request_id !== q.request_id) return false;
  if (q.trace_id && e.trace_id !== q.trace_id) return false;
  if (q.status !== undefined && e.status !== q.status) return false;
  if (q.status_min !== undefined && (typeof e.status !== 'number' || e.status < q.status_min)) return false;
  if (q.status_max !== undefined && (typeof e.status !== 'number' || e.status > q.status_max)) return false;
  if (f.search !== undefined) {
    const s = f.search;
    const fields = [e.resource_id, e.log_id, e.error_code, e.operation];
    if (!fields.some((v) => typeof v === 'string' && v.toLowerCase().includes(s))) return false;
  }
  return true;
}
