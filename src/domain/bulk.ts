import { randomUUID } from 'node:crypto';
import type { BulkStore } from '../store/bulk-store.js';
import type { RecordFields } from '../store/admin-store.js';
import type { AdminService } from './admin.js';
import type { AdminListingService } from './admin-listings.js';
import { SEARCH_MAX_CHARS } from './admin-listings.js';
import type { AuthContext, Correlation } from './auth.js';
import { payloadHash } from './canonical.js';
import { CyclesError } from './errors.js';

/**
 * Bulk actions (admin digest §2.11): one filter, one action, applied row by row. Order of checks:
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

const TENANT_TARGET: Record<string, string> = { SUSPEND: 'SUSPENDED', REACTIVATE: 'ACTIVE', CLOSE: 'CLOSED' };

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
  ) {}

  // ------------------------------------------------------------------ tenants

  async tenants(auth: AuthContext, body: TenantBulkRequest, corr: Correlation): Promise<BulkOutcome> {
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
          if (status === target) {
            out.skipped.push({ id, reason: 'ALREADY_IN_TARGET_STATE' });
            continue;
          }
          if (status === 'CLOSED') {
            out.failed.push({ id, error_code: 'INVALID_TRANSITION', message: `Cannot ${body.action.toLowerCase()} a CLOSED tenant` });
            continue;
          }
          await this.admin.updateTenant(auth, id, { status: target }, { ...corr, correlationId });
          out.succeeded.push({ id });
        } catch (err) {
          out.failed.push(this.tenantRowError(id, err));
        }
      }
      return out;
    });
  }

  private tenantRowError(id: string, err: unknown): BulkRow {
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
