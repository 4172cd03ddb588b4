import { randomUUID } from 'node:crypto';
import type { BulkStore } from '../store/bulk-store.js';
import type { RecordFields } from '../store/admin-store.js';
import type { WebhookStore } from '../store/webhook-store.js';
import type { AdminService, CascadeOptions, CascadeReport } from './admin.js';
import type { AdminListingService } from './admin-listings.js';
import { SEARCH_MAX_CHARS } from './admin-listings.js';
import { actorJson, type AuthContext, type Correlation } from './auth.js';
import { payloadHash } from './canonical.js';
import { CyclesError } from './errors.js';
import { newEventIdBase } from './ids.js';
import { EVENT_TYPES, SYSTEM_OWNER, checkSelectors, ownerOfSubscriptionId } from './webhooks.js';

/**
 * Bulk actions over tenants, budgets and webhook subscriptions (admin digest §2.11): one filter,
 * one action, applied row by row. Order of checks:
 * schema → payload rules → empty filter → search length → idempotency claim → match → row cap →
 * expected_count → apply (a row's failure never aborts the rest) → store the replay envelope.
 * Every rejection before the first mutation releases the claim, so the key can be retried.
 */

/** Rows one bulk action may touch; more matches are refused with the exact count. */
export const BULK_ROW_CAP = 500;
/** How long the response stays replayable under its idempotency key. */
export const BULK_REPLAY_TTL_MS = 15 * 60_000;
/** How long a duplicate waits for a concurrent call with the same key before answering 503. */
export const BULK_WAIT_MS = 5_000;
/** Poll interval while waiting for that call. */
const BULK_POLL_MS = 100;

export interface BulkRow {
  id: string;
  error_code?: string;
  message?: string;
  reason?: string;
}

export interface BulkResponse {
  action: string;
  total_matched: number;
  succeeded: BulkRow[];
  failed: BulkRow[];
  skipped: BulkRow[];
  idempotency_key: string;
}

export interface BulkOutcome {
  response: BulkResponse;
  /** True when the response was replayed from the idempotency record (nothing was applied). */
  replayed: boolean;
}

export interface TenantBulkRequest {
  filter: { status?: string; parent_tenant_id?: string; search?: string };
  action: string;
  expected_count?: number;
  idempotency_key: string;
}

type Amount = { unit: string; amount: number };

export interface BudgetBulkRequest {
  filter: {
    tenant_id: string; scope_prefix?: string; unit?: string; status?: string; over_limit?: boolean; has_debt?: boolean;
    utilization_min?: number; utilization_max?: number; search?: string;
  };
  action: string;
  amount?: Amount;
  spent?: Amount;
  reason?: string;
  expected_count?: number;
  idempotency_key: string;
}

export interface WebhookBulkRequest {
  filter: { tenant_id?: string; status?: string; event_type?: string; search?: string };
  action: string;
  expected_count?: number;
  idempotency_key: string;
}

/** Per-call hooks of a tenant bulk action: how to run a CLOSE cascade and what to do with its report. */
export interface TenantBulkHooks {
  cascade?: CascadeOptions;
  onCascade?: (tenantId: string, report: CascadeReport) => Promise<void>;
}

const TENANT_TARGET: Record<string, string> = { SUSPEND: 'SUSPENDED', REACTIVATE: 'ACTIVE', CLOSE: 'CLOSED' };

/** Subscriptions a webhook bulk filter may examine before the caller must narrow it. */
export const WEBHOOK_BULK_SCAN_MAX = 50_000;
/** Subscription ids read per index window while matching, and records hydrated at once. */
const WEBHOOK_BULK_WINDOW = 200;
/** Attempts of one row whose record changed between the read and the write. */
const WEBHOOK_ROW_ATTEMPTS = 3;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function checkSearch(search: string | undefined): void {
  if (search !== undefined && search.trim().length > SEARCH_MAX_CHARS) {
    throw new CyclesError('INVALID_REQUEST', `Invalid value for parameter 'search': longer than ${SEARCH_MAX_CHARS} characters`);
  }
}

/** The refusals that follow the match: the row cap, then the caller's expected count. */
function checkMatched(total: number, expected: number | undefined): void {
  if (total > BULK_ROW_CAP) {
    throw new CyclesError('LIMIT_EXCEEDED', `Filter matches ${total} rows; a bulk action is limited to ${BULK_ROW_CAP}`, { total_matched: total }, 400);
  }
  if (expected !== undefined && expected !== total) {
    throw new CyclesError('COUNT_MISMATCH', `expected_count ${expected} does not match ${total} matched rows`, { total_matched: total });
  }
}

function knownEventType(t: string): boolean {
  const dot = t.indexOf('.');
  if (dot > 0 && (EVENT_TYPES[t.slice(0, dot)]?.includes(t.slice(dot + 1)) ?? false)) return true;
  return /^custom\.[a-z0-9_.-]+$/.test(t);
}

function envelope(action: string, key: string, total: number): BulkResponse {
  return { action, total_matched: total, succeeded: [], failed: [], skipped: [], idempotency_key: key };
}

/** Maps a budget refusal of the fund script to the row error code of §2.11. */
function budgetRowError(err: CyclesError): { error_code: string; message: string } {
  switch (err.code) {
    case 'BUDGET_FROZEN':
    case 'BUDGET_CLOSED':
      return { error_code: 'INVALID_TRANSITION', message: err.message };
    case 'BUDGET_NOT_FOUND':
      return { error_code: 'NOT_FOUND', message: err.message };
    default:
      return { error_code: err.code, message: err.message };
  }
}

export class BulkService {
  constructor(
    private readonly admin: AdminService,
    private readonly listings: AdminListingService,
    private readonly store: BulkStore,
    private readonly webhookStore?: WebhookStore,
  ) {}

  // ------------------------------------------------------------------ tenants

  async tenants(auth: AuthContext, body: TenantBulkRequest, corr: Correlation, hooks: TenantBulkHooks = {}): Promise<BulkOutcome> {
    const f = body.filter;
    if (Object.values(f).every((v) => v === undefined)) {
      throw new CyclesError('INVALID_REQUEST', 'filter must contain at least one property');
    }
    checkSearch(f.search);
    const target = TENANT_TARGET[body.action]!;
    const correlationId = `tenant_bulk_action:${body.action.toLowerCase()}:${corr.requestId}`;
    return this.idempotent('tenants-bulk', body, async () => {
      const { rows, total } = await this.listings.matchTenants(f, BULK_ROW_CAP);
      checkMatched(total, body.expected_count);
      const out = envelope(body.action, body.idempotency_key, total);
      for (const rec of rows) {
        const id = rec.tenant_id!;
        try {
          // Each row re-reads the live status at apply time.
          const live = await this.admin.getTenant(id);
          const status = String(live.status);
          if (status === 'CLOSED' && target === 'CLOSED') {
            // A re-close finishes whatever an earlier cascade left: a row that moved a child
            // succeeded; one with nothing left was already in the target state.
            const report = await this.admin.runCloseCascade(auth, id, corr, hooks.cascade);
            if (hooks.onCascade) await hooks.onCascade(id, report);
            if (report.changes.length > 0) out.succeeded.push({ id });
            else out.skipped.push({ id, reason: 'ALREADY_IN_TARGET_STATE' });
            continue;
          }
          if (status === target) {
            out.skipped.push({ id, reason: 'ALREADY_IN_TARGET_STATE' });
            continue;
          }
          if (status === 'CLOSED') {
            out.failed.push({ id, error_code: 'INVALID_TRANSITION', message: `Cannot ${body.action.toLowerCase()} a CLOSED tenant` });
            continue;
          }
          const { cascade } = await this.admin.patchTenant(auth, id, { status: target }, { ...corr, correlationId }, hooks.cascade);
          if (cascade && hooks.onCascade) await hooks.onCascade(id, cascade);
          out.succeeded.push({ id });
        } catch (err) {
          out.failed.push(this.tenantRowError(id, err));
        }
      }
      return out;
    });
  }

  private tenantRowError(id: string, err: unknown): BulkRow {
    if (err instanceof CyclesError && err.code === 'INTERNAL_ERROR') return { id, error_code: 'INTERNAL_ERROR', message: err.message };
    if (err instanceof CyclesError) {
      if (err.code === 'TENANT_NOT_FOUND') return { id, error_code: 'NOT_FOUND', message: err.message };
      // The update script refuses a transition out of CLOSED (a close that raced this row).
      if (err.code === 'INVALID_REQUEST') return { id, error_code: 'INVALID_TRANSITION', message: err.message };
    }
    return { id, error_code: 'INTERNAL_ERROR', message: 'Row could not be updated' };
  }

  // ------------------------------------------------------------------ budgets

  async budgets(auth: AuthContext, body: BudgetBulkRequest, corr: Correlation): Promise<BulkOutcome> {
    const amount = body.amount;
    if (amount === undefined) throw new CyclesError('INVALID_REQUEST', `amount is required for action ${body.action}`);
    if (body.spent !== undefined && body.action !== 'RESET_SPENT') {
      throw new CyclesError('INVALID_REQUEST', 'spent is only accepted with action RESET_SPENT');
    }
    const f = body.filter;
    if (f.tenant_id.trim() === '') throw new CyclesError('INVALID_REQUEST', 'filter.tenant_id is required');
    checkSearch(f.search);
    const correlationId = `budget_bulk_action:${body.action.toLowerCase()}:${corr.requestId}`;
    return this.idempotent('budgets-bulk', body, async () => {
      const { rows, total } = await this.listings.matchBudgets(auth, f, BULK_ROW_CAP);
      checkMatched(total, body.expected_count);
      const out = envelope(body.action, body.idempotency_key, total);
      const owner = await this.admin.getTenant(f.tenant_id).catch(() => undefined);
      for (const rec of rows) {
        const row = await this.budgetRow(auth, body, amount, rec, owner?.status === 'CLOSED', { ...corr, correlationId });
        if (row.error_code !== undefined) out.failed.push(row);
        else if (row.reason !== undefined) out.skipped.push(row);
        else out.succeeded.push(row);
      }
      return out;
    });
  }

  private async budgetRow(
    auth: AuthContext,
    body: BudgetBulkRequest,
    amount: Amount,
    rec: RecordFields,
    ownerClosed: boolean,
    corr: Correlation,
  ): Promise<BulkRow> {
    const id = rec.ledger_id ?? `${rec.scope}:${rec.unit}`;
    const scope = rec.scope!;
    const unit = rec.unit!;
    if (ownerClosed) return { id, error_code: 'TENANT_CLOSED', message: `Tenant is CLOSED: ${body.filter.tenant_id}` };
    if (amount.unit !== unit || (body.spent !== undefined && body.spent.unit !== unit)) {
      return { id, error_code: 'INVALID_TRANSITION', message: `Amount unit ${amount.unit} does not match the ledger unit ${unit}` };
    }
    if (body.action === 'REPAY_DEBT' && Number(rec.debt ?? 0) <= 0) return { id, reason: 'ALREADY_IN_TARGET_STATE' };
    try {
      // The derived key makes each row apply at most once per bulk key (24 h fund cache).
      await this.admin.fundBudget(auth, { scope, unit, tenant_id: body.filter.tenant_id }, {
        operation: body.action,
        amount,
        ...(body.spent !== undefined ? { spent: body.spent } : {}),
        ...(body.reason !== undefined ? { reason: body.reason } : {}),
        idempotency_key: `${body.idempotency_key}:${scope}:${unit}`,
      }, corr);
      return { id };
    } catch (err) {
      if (err instanceof CyclesError) return { id, ...budgetRowError(err) };
      return { id, error_code: 'INTERNAL_ERROR', message: 'Row could not be funded' };
    }
  }

  // ------------------------------------------------------------------ webhooks

  /**
   * POST /v1/admin/webhooks/bulk-action (admin digest §2.11, spec bulkActionWebhooks): PAUSE
   * (ACTIVE → PAUSED), RESUME (PAUSED → ACTIVE; DISABLED cannot be resumed), DELETE. One
   * webhook.paused / resumed / deleted event per mutated row, correlation
   * `webhook_bulk_action:<action>:<request_id>`; rows of a CLOSED owner fail TENANT_CLOSED.
   */
  async webhooks(auth: AuthContext, body: WebhookBulkRequest, corr: Correlation): Promise<BulkOutcome> {
    const store = this.webhookStore;
    if (store === undefined) throw new Error('BulkService was built without a webhook store');
    const f = body.filter;
    const tenantId = f.tenant_id?.trim() || undefined;
    const search = f.search?.trim().toLowerCase() || undefined;
    if (tenantId === undefined && f.status === undefined && (f.event_type ?? '') === '' && search === undefined) {
      throw new CyclesError('INVALID_REQUEST', 'filter must contain at least one property');
    }
    checkSearch(f.search);
    if (f.event_type !== undefined && f.event_type !== '' && !knownEventType(f.event_type)) {
      throw new CyclesError('INVALID_REQUEST', `Invalid value for parameter 'filter.event_type': ${f.event_type}`);
    }
    const correlationId = `webhook_bulk_action:${body.action.toLowerCase()}:${corr.requestId}`;
    return this.idempotent('webhooks-bulk', body, async () => {
      const { rows, total } = await this.matchWebhooks(store, { tenantId, status: f.status, eventType: f.event_type || undefined, search });
      checkMatched(total, body.expected_count);
      const out = envelope(body.action, body.idempotency_key, total);
      const rowCorr = { ...corr, correlationId };
      for (const rec of rows) {
        const row = await this.webhookRow(auth, store, body.action, rec, rowCorr);
        if (row.error_code !== undefined) out.failed.push(row);
        else if (row.reason !== undefined) out.skipped.push(row);
        else out.succeeded.push(row);
      }
      return out;
    });
  }

  /** Every subscription matching the filter (ascending id), the first BULK_ROW_CAP kept. */
  private async matchWebhooks(
    store: WebhookStore,
    q: { tenantId: string | undefined; status: string | undefined; eventType: string | undefined; search: string | undefined },
  ): Promise<{ rows: RecordFields[]; total: number }> {
    const rows: RecordFields[] = [];
    let total = 0;
    if (q.tenantId !== undefined && q.tenantId !== SYSTEM_OWNER && !/^[a-z0-9-]{1,64}$/.test(q.tenantId)) return { rows, total };
    let after: string | undefined;
    for (let examined = 0; ;) {
      const ids = await store.ids(q.tenantId, after, WEBHOOK_BULK_WINDOW);
      if (ids.length === 0) break;
      examined += ids.length;
      if (examined > WEBHOOK_BULK_SCAN_MAX) {
        throw new CyclesError('LIMIT_EXCEEDED', `Filter examines more than ${WEBHOOK_BULK_SCAN_MAX} subscriptions; narrow the filter (tenant_id)`, undefined, 400);
      }
      after = ids[ids.length - 1];
      const refs = ids.flatMap((id) => {
        const ownerId = ownerOfSubscriptionId(id);
        return ownerId === undefined ? [] : [{ ownerId, id }];
      });
      for (const rec of await store.getMany(refs)) {
        if (!rec) continue;
        if (q.status !== undefined && rec.status !== q.status) continue;
        if (q.eventType !== undefined && !(JSON.parse(rec.event_types ?? '[]') as string[]).includes(q.eventType)) continue;
        if (q.search !== undefined && !(rec.subscription_id ?? '').toLowerCase().includes(q.search) && !(rec.url ?? '').toLowerCase().includes(q.search)) continue;
        total += 1;
        if (rows.length < BULK_ROW_CAP) rows.push(rec);
      }
      if (ids.length < WEBHOOK_BULK_WINDOW) break;
    }
    return { rows, total };
  }

  /** One row, on the live record: a record changed between read and write is re-read. */
  private async webhookRow(auth: AuthContext, store: WebhookStore, action: string, matched: RecordFields, corr: Correlation): Promise<BulkRow> {
    const id = matched.subscription_id!;
    const ownerId = ownerOfSubscriptionId(id) ?? matched.tenant_id ?? SYSTEM_OWNER;
    const owner = { ownerId, concrete: ownerId !== SYSTEM_OWNER };
    const emit = { eventIdBase: newEventIdBase(), requestId: corr.requestId, traceId: corr.traceId, actorJson: actorJson(auth), correlationId: corr.correlationId! };
    const closed = { id, error_code: 'TENANT_CLOSED', message: `Tenant is CLOSED: ${ownerId}` };
    try {
      for (let attempt = 0; attempt < WEBHOOK_ROW_ATTEMPTS; attempt += 1) {
        const rec = await store.get(ownerId, id);
        if (!rec) {
          return action === 'DELETE' ? { id, reason: 'ALREADY_DELETED' } : { id, error_code: 'NOT_FOUND', message: `Webhook subscription not found: ${id}` };
        }
        // A closed owner wins over the row's own state (tenant-close Rule 2).
        if (owner.concrete && (await store.tenantStatus(ownerId)) === 'CLOSED') return closed;
        const status = rec.status ?? 'ACTIVE';
        if (action === 'DELETE') {
          const r = await store.delete(owner, id, true, emit);
          if (r.result === 'OK') return { id };
          if (r.result === 'TENANT_CLOSED') return closed;
          return { id, reason: 'ALREADY_DELETED' };
        }
        let target: string;
        if (action === 'PAUSE') {
          if (status !== 'ACTIVE') return { id, reason: 'ALREADY_IN_TARGET_STATE' };
          target = 'PAUSED';
        } else {
          if (status === 'ACTIVE') return { id, reason: 'ALREADY_IN_TARGET_STATE' };
          if (status === 'DISABLED') return { id, error_code: 'INVALID_TRANSITION', message: 'Cannot resume DISABLED subscription' };
          try {
            checkSelectors(ownerId, JSON.parse(rec.event_types ?? '[]') as string[], JSON.parse(rec.event_categories ?? '[]') as string[]);
          } catch (err) {
            return { id, error_code: 'INVALID_TRANSITION', message: err instanceof Error ? err.message : 'Invalid selectors' };
          }
          target = 'ACTIVE';
        }
        const fields: RecordFields = { status: target, updated_at: new Date().toISOString() };
        if (target === 'ACTIVE' && rec.consecutive_failures !== undefined && rec.consecutive_failures !== '0') fields.consecutive_failures = '0';
        const data = { subscription_id: id, tenant_id: ownerId, previous_status: status, new_status: target, changed_fields: [] };
        const event = { type: target === 'PAUSED' ? 'webhook.paused' : 'webhook.resumed', dataJson: JSON.stringify(data), correlationId: corr.correlationId! };
        const result = await store.update(owner, id, rec.rev ?? '0', fields, event, emit);
        if (result === 'OK') return { id };
        if (result === 'TENANT_CLOSED') return closed;
        if (result === 'NOT_FOUND') return { id, error_code: 'NOT_FOUND', message: `Webhook subscription not found: ${id}` };
      }
      return { id, error_code: 'INTERNAL_ERROR', message: 'Subscription kept changing during the bulk action' };
    } catch {
      return { id, error_code: 'INTERNAL_ERROR', message: 'Row could not be updated' };
    }
  }

  // ------------------------------------------------------------------ idempotency

  /**
   * Runs `work` under the request's idempotency key: the first call claims the key (SET NX with
   * the payload hash) and stores its response for 15 minutes; a later call with the same payload
   * gets that response verbatim, one with another payload 409 IDEMPOTENCY_MISMATCH, and one that
   * arrives while the first is still running waits up to BULK_WAIT_MS, then 503.
   */
  private async idempotent(endpoint: string, body: { idempotency_key: string }, work: () => Promise<BulkResponse>): Promise<BulkOutcome> {
    const { idempotency_key: key, ...payload } = body;
    const h = payloadHash(payload);
    const token = randomUUID();
    const deadline = Date.now() + BULK_WAIT_MS;
    for (;;) {
      if (await this.store.claim(endpoint, key, { h, t: token, s: 'pending' }, BULK_REPLAY_TTL_MS)) break;
      const rec = await this.store.get(endpoint, key);
      if (rec) {
        if (rec.h !== h) throw new CyclesError('IDEMPOTENCY_MISMATCH', 'Idempotency key was already used with a different request payload');
        if (rec.s === 'done') return { response: rec.r as BulkResponse, replayed: true };
      }
      if (Date.now() >= deadline) {
        throw new CyclesError('INTERNAL_ERROR', 'A bulk action with this idempotency key is still in progress', undefined, 503);
      }
      if (rec) await sleep(BULK_POLL_MS);
    }
    let response: BulkResponse;
    try {
      response = await work();
    } catch (err) {
      await this.store.release(endpoint, key, token);
      throw err;
    }
    await this.store.complete(endpoint, key, { h, t: token, s: 'done', r: response }, BULK_REPLAY_TTL_MS);
    return { response, replayed: false };
  }
}
