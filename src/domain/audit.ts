import type { AdminStore } from '../store/admin-store.js';
import { newId } from './ids.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import { CyclesError } from './errors.js';

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
  operation?: string;
  resource_type?: string;
  resource_id?: string;
  request_id?: string;
  trace_id?: string;
  status?: number;
  limit?: number;
  cursor?: string;
}

/** Entries examined per audit page before answering with a partial page and a cursor. */
const AUDIT_SCAN_BUDGET = 5000;
const AUDIT_WINDOW = 200;
const AUDIT_MAX_ROUNDS = 50;
const DAY_MS = 86_400_000;

/** Audit log: writes never fail the request they describe; reads page newest first. */
export class AuditLog {
  constructor(
    private readonly store: AdminStore,
    private readonly retentionMs: number = 400 * DAY_MS,
    private readonly onWriteError: (err: unknown) => void = () => {},
  ) {}

  async write(entry: Omit<AuditEntry, 'log_id' | 'timestamp'>, nowMs: number = Date.now()): Promise<void> {
    const full: AuditEntry = { log_id: newId('log', 8), timestamp: new Date(nowMs).toISOString(), ...entry };
    try {
      await this.store.writeAudit(full.log_id, full.tenant_id, nowMs, JSON.stringify(full), this.retentionMs);
    } catch (err) {
      this.onWriteError(err);
    }
  }

  async list(q: AuditQuery): Promise<Record<string, unknown>> {
    const limit = q.limit ?? 50;
    const index = q.tenant_id ?? '_all';
    let before: number | undefined;
    let afterId: string | undefined;
    if (q.cursor) {
      const c = decodeCursor<{ s?: number; id?: string }>(q.cursor);
      if (typeof c.s !== 'number' || typeof c.id !== 'string') throw new CyclesError('INVALID_REQUEST', 'cursor is not valid');
      before = c.s;
      afterId = c.id;
    }
    const logs: AuditEntry[] = [];
    let examined = 0;
    let last: [string, number] | undefined;
    let exhausted = false;
    let skipping = afterId !== undefined;
    for (let round = 0; logs.length < limit && examined < AUDIT_SCAN_BUDGET && round < AUDIT_MAX_ROUNDS; round += 1) {
      const window = await this.store.auditIds(index, before, AUDIT_WINDOW);
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
        if (matches(e, q)) logs.push(e);
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

function matches(e: AuditEntry, q: AuditQuery): boolean {
  if (q.key_id && e.key_id !== q.key_id) return false;
  if (q.operation && !q.operation.split(',').includes(e.operation)) return false;
  if (q.resource_type && !q.resource_type.split(',').includes(e.resource_type ?? '')) return false;
  if (q.resource_id && e.resource_id !== q.resource_id) return false;
  if (q.request_id && e.request_id !== q.request_id) return false;
  if (q.trace_id && e.trace_id !== q.trace_id) return false;
  if (q.status !== undefined && e.status !== q.status) return false;
  return true;
}
