import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { payloadHash } from '../src/domain/canonical.js';
import { ADMIN_KEY, USD, createTenant, expectError, idem, json, startHarness, type Harness, type TestTenant } from './helpers.js';

/**
 * Bulk actions (admin digest §2.11): the envelope, the order of checks, the row cap, the expected
 * count, idempotent replay, per-row outcomes, per-row events with correlation ids and the audit row.
 */

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => h.close());

const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const amt = (amount: number, unit = USD) => ({ unit, amount });

function adm(method: 'GET' | 'POST' | 'PATCH', url: string, payload?: unknown) {
  return h.admin.inject({ method, url, headers: ADMIN, ...(payload === undefined ? {} : { payload: payload as object }) });
}

const bulkBudgets = (body: Record<string, unknown>) => adm('POST', '/v1/admin/budgets/bulk-action', body);
const bulkTenants = (body: Record<string, unknown>) => adm('POST', '/v1/admin/tenants/bulk-action', body);

async function ledgers(t: TestTenant): Promise<Record<string, any>> {
  const res = await adm('GET', `/v1/admin/budgets?tenant_id=${t.id}&limit=100&sort_by=scope`);
  expect(res.statusCode, res.body).toBe(200);
  return Object.fromEntries((json(res).ledgers as any[]).map((l) => [`${l.scope}|${l.unit}`, l]));
}

async function ledger(t: TestTenant, rel = 'workspace:prod', unit = USD): Promise<any> {
  return (await ledgers(t))[`${t.scope(rel)}|${unit}`];
}

async function outboxEvents(tenantId: string): Promise<any[]> {
  const entries = await h.system.redis.xrange(h.system.keys.outbox(tenantId), '-', '+');
  return entries.map(([, fields]) => JSON.parse(fields[1]!));
}

async function auditRows(query: string): Promise<any[]> {
  const res = await adm('GET', `/v1/admin/audit/logs?limit=100&${query}`);
  expect(res.statusCode, res.body).toBe(200);
  return json(res).logs;
}

function ids(rows: any[] | undefined): string[] {
  return (rows ?? []).map((r) => r.id).sort();
}

describe('POST /v1/admin/budgets/bulk-action', () => {
  it('refuses a missing filter.tenant_id, a blank one, a missing amount and spent without RESET_SPENT; nothing changes', async () => {
    const t = await createTenant(h);
    const before = await ledgers(t);
    expectError(await bulkBudgets({ filter: { scope_prefix: t.scope() }, action: 'CREDIT', amount: amt(10), idempotency_key: idem('b') }), 400, 'INVALID_REQUEST');
    expectError(await bulkBudgets({ filter: { tenant_id: '  ' }, action: 'CREDIT', amount: amt(10), idempotency_key: idem('b') }), 400, 'INVALID_REQUEST');
    expectError(await bulkBudgets({ filter: { tenant_id: t.id }, action: 'CREDIT', idempotency_key: idem('b') }), 400, 'INVALID_REQUEST');
    expectError(await bulkBudgets({ filter: { tenant_id: t.id }, action: 'CREDIT', amount: amt(10), spent: amt(0), idempotency_key: idem('b') }), 400, 'INVALID_REQUEST');
    expectError(await bulkBudgets({ filter: { tenant_id: t.id, search: 'x'.repeat(129) }, action: 'CREDIT', amount: amt(10), idempotency_key: idem('b') }), 400, 'INVALID_REQUEST');
    expectError(await bulkBudgets({ filter: { tenant_id: t.id }, action: 'CREDIT', amount: amt(10), idempotency_key: 'k'.repeat(129) }), 400, 'INVALID_REQUEST');
    expect(await ledgers(t)).toEqual(before);
  });

  it('a wrong expected_count is 409 COUNT_MISMATCH with details.total_matched; the key is released for a retry', async () => {
    const t = await createTenant(h);
    const before = await ledgers(t);
    const key = idem('b');
    const res = await bulkBudgets({ filter: { tenant_id: t.id }, action: 'CREDIT', amount: amt(10), expected_count: 5, idempotency_key: key });
    expect(expectError(res, 409, 'COUNT_MISMATCH').details).toEqual({ total_matched: 2 });
    expect(await ledgers(t)).toEqual(before);
    const retry = await bulkBudgets({ filter: { tenant_id: t.id }, action: 'CREDIT', amount: amt(10), expected_count: 2, idempotency_key: key });
    expect(retry.statusCode, retry.body).toBe(200);
    expect(json(retry).succeeded).toHaveLength(2);
  });

  it('CREDIT funds every matched ledger once, with one budget.funded event per row carrying the bulk correlation id', async () => {
    const t = await createTenant(h);
    const before = await ledgers(t);
    const key = idem('b');
    const res = await bulkBudgets({ filter: { tenant_id: t.id }, action: 'CREDIT', amount: amt(10), reason: 'top-up', idempotency_key: key });
    expect(res.statusCode, res.body).toBe(200);
    const body = json(res);
    expect(body).toMatchObject({ action: 'CREDIT', total_matched: 2, failed: [], skipped: [], idempotency_key: key });
    expect(ids(body.succeeded)).toEqual(Object.values(before).map((l) => l.ledger_id).sort());
    const after = await ledgers(t);
    for (const [k, l] of Object.entries(before)) expect(after[k].allocated.amount).toBe(l.allocated.amount + 10);

    const correlation = `budget_bulk_action:credit:${res.headers['x-request-id']}`;
    const funded = (await outboxEvents(t.id)).filter((e) => e.event_type === 'budget.funded');
    expect(funded).toHaveLength(2);
    expect(funded.every((e) => e.correlation_id === correlation)).toBe(true);

    const audit = await auditRows(`tenant_id=${t.id}&operation=bulkActionBudgets`);
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ resource_id: 'bulk-action', resource_type: 'budget', status: 200 });
    expect(audit[0].metadata).toMatchObject({ action: 'CREDIT', total_matched: 2, succeeded: 2, failed: 0, skipped: 0 });
  });

  it('a replay with the same key and body returns the same response and applies nothing; another body is 409 IDEMPOTENCY_MISMATCH', async () => {
    const t = await createTenant(h);
    const body = { filter: { tenant_id: t.id }, action: 'CREDIT', amount: amt(10), idempotency_key: idem('b') };
    const first = await bulkBudgets(body);
    expect(first.statusCode, first.body).toBe(200);
    const replay = await bulkBudgets({ ...body, filter: { tenant_id: t.id } });
    expect(replay.statusCode, replay.body).toBe(200);
    expect(json(replay)).toEqual(json(first));
    expect((await ledger(t)).allocated.amount).toBe(100_010);
    expectError(await bulkBudgets({ ...body, amount: amt(11) }), 409, 'IDEMPOTENCY_MISMATCH');
    expect((await ledger(t)).allocated.amount).toBe(100_010);
  });

  it('a derived row key is applied at most once even when the bulk response is gone', async () => {
    const t = await createTenant(h);
    const body = { filter: { tenant_id: t.id }, action: 'CREDIT', amount: amt(10), idempotency_key: idem('b') };
    expect((await bulkBudgets(body)).statusCode).toBe(200);
    await h.system.redis.del(h.system.keys.bulkIdempotency('budgets-bulk', body.idempotency_key));
    const again = await bulkBudgets(body);
    expect(json(again).succeeded).toHaveLength(2);
    expect((await ledger(t)).allocated.amount).toBe(100_010);
  });

  it('REPAY_DEBT over ledgers without debt skips every row ALREADY_IN_TARGET_STATE and emits nothing', async () => {
    const t = await createTenant(h);
    const res = await bulkBudgets({ filter: { tenant_id: t.id }, action: 'REPAY_DEBT', amount: amt(10), idempotency_key: idem('b') });
    const body = json(res);
    expect(body.total_matched).toBe(2);
    expect([body.succeeded.length, body.failed.length]).toEqual([0, 0]);
    expect(body.skipped.map((r: any) => r.reason)).toEqual(['ALREADY_IN_TARGET_STATE', 'ALREADY_IN_TARGET_STATE']);
    expect((await outboxEvents(t.id)).filter((e) => e.event_type === 'budget.debt_repaid')).toEqual([]);
  });

  it('per-row failures: FROZEN → INVALID_TRANSITION, unit mismatch → INVALID_TRANSITION, DEBIT overdraw → BUDGET_EXCEEDED', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:prod', 100], ['workspace:dev', 1_000], ['workspace:tok', 50, { unit: 'TOKENS' }]] });
    const freeze = await adm('POST', `/v1/admin/budgets/freeze?scope=${encodeURIComponent(t.scope('workspace:dev'))}&unit=${USD}`, {});
    expect(freeze.statusCode, freeze.body).toBe(200);
    const all = await ledgers(t);
    const id = (rel: string, unit = USD) => all[`${t.scope(rel)}|${unit}`].ledger_id;
    const res = await bulkBudgets({ filter: { tenant_id: t.id }, action: 'DEBIT', amount: amt(500), idempotency_key: idem('b') });
    expect(res.statusCode, res.body).toBe(200);
    const body = json(res);
    expect(body.total_matched).toBe(4);
    expect(ids(body.succeeded)).toEqual([id('')]);
    const failed = Object.fromEntries(body.failed.map((r: any) => [r.id, r.error_code]));
    expect(failed).toEqual({
      [id('workspace:prod')]: 'BUDGET_EXCEEDED',
      [id('workspace:dev')]: 'INVALID_TRANSITION',
      [id('workspace:tok', 'TOKENS')]: 'INVALID_TRANSITION',
    });
    expect(body.failed.every((r: any) => typeof r.message === 'string' && r.message.length > 0)).toBe(true);
    const after = await ledgers(t);
    expect(after[`${t.scope('workspace:prod')}|${USD}`].allocated.amount).toBe(100);
    expect(after[`${t.scope()}|${USD}`].allocated.amount).toBe(999_500);
  });

  it('rows of a CLOSED tenant fail TENANT_CLOSED', async () => {
    const t = await createTenant(h);
    expect((await adm('PATCH', `/v1/admin/tenants/${t.id}`, { status: 'CLOSED' })).statusCode).toBe(200);
    const body = json(await bulkBudgets({ filter: { tenant_id: t.id }, action: 'CREDIT', amount: amt(10), idempotency_key: idem('b') }));
    expect(body.failed.map((r: any) => r.error_code)).toEqual(['TENANT_CLOSED', 'TENANT_CLOSED']);
    expect(body.succeeded).toEqual([]);
  });

  it('filters narrow the match (scope_prefix, unit) and an unknown tenant matches nothing', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000], ['workspace:prod', 100], ['workspace:tok', 50, { unit: 'TOKENS' }]] });
    const res = await bulkBudgets({ filter: { tenant_id: t.id, scope_prefix: t.scope('workspace'), unit: USD }, action: 'RESET', amount: amt(70), idempotency_key: idem('b') });
    const body = json(res);
    expect(body.total_matched).toBe(1);
    expect((await ledger(t)).allocated.amount).toBe(70);
    const none = json(await bulkBudgets({ filter: { tenant_id: 'no-such-tenant-x' }, action: 'CREDIT', amount: amt(1), idempotency_key: idem('b') }));
    expect(none).toMatchObject({ total_matched: 0, succeeded: [], failed: [], skipped: [] });
  });

  it('more than 500 matches is 400 LIMIT_EXCEEDED with the exact details.total_matched; nothing changes', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000]] });
    for (let i = 0; i < 500; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => t.budget(`workspace:b${i + j}`, 1000)));
    }
    const res = await bulkBudgets({ filter: { tenant_id: t.id }, action: 'CREDIT', amount: amt(10), idempotency_key: idem('b') });
    expect(expectError(res, 400, 'LIMIT_EXCEEDED').details).toEqual({ total_matched: 501 });
    expect(await h.system.redis.hget(h.system.keys.budget(t.id, t.scope('workspace:b0'), USD), 'allocated')).toBe('1000');
  }, 60_000);
});

describe('POST /v1/admin/tenants/bulk-action', () => {
  async function tagged(tag: string): Promise<TestTenant> {
    const t = await createTenant(h, { budgets: [] });
    const res = await adm('PATCH', `/v1/admin/tenants/${t.id}`, { name: `${tag} ${t.id}` });
    expect(res.statusCode, res.body).toBe(200);
    return t;
  }

  it('refuses an empty filter and an unknown filter property', async () => {
    expectError(await bulkTenants({ filter: {}, action: 'SUSPEND', idempotency_key: idem('t') }), 400, 'INVALID_REQUEST');
    expectError(await bulkTenants({ filter: { observe: true }, action: 'SUSPEND', idempotency_key: idem('t') }), 400, 'INVALID_REQUEST');
    expectError(await bulkTenants({ filter: { status: 'ACTIVE' }, action: 'FREEZE', idempotency_key: idem('t') }), 400, 'INVALID_REQUEST');
  });

  it('SUSPEND: ACTIVE succeeds, SUSPENDED skipped, CLOSED failed INVALID_TRANSITION; one tenant.suspended event per success', async () => {
    const tag = idem('tag');
    const active = await tagged(tag);
    const suspended = await tagged(tag);
    const closed = await tagged(tag);
    expect((await adm('PATCH', `/v1/admin/tenants/${suspended.id}`, { status: 'SUSPENDED' })).statusCode).toBe(200);
    expect((await adm('PATCH', `/v1/admin/tenants/${closed.id}`, { status: 'CLOSED' })).statusCode).toBe(200);
    const res = await bulkTenants({ filter: { search: tag.toUpperCase() }, action: 'SUSPEND', expected_count: 3, idempotency_key: idem('t') });
    expect(res.statusCode, res.body).toBe(200);
    const body = json(res);
    expect(body.total_matched).toBe(3);
    expect(body.succeeded).toEqual([{ id: active.id }]);
    expect(body.skipped).toEqual([{ id: suspended.id, reason: 'ALREADY_IN_TARGET_STATE' }]);
    expect(body.failed.map((r: any) => [r.id, r.error_code])).toEqual([[closed.id, 'INVALID_TRANSITION']]);
    expect(json(await adm('GET', `/v1/admin/tenants/${active.id}`)).status).toBe('SUSPENDED');
    const correlation = `tenant_bulk_action:suspend:${res.headers['x-request-id']}`;
    const events = [active, suspended, closed].map((t) => t.id);
    const tagged_ = (await Promise.all(events.map(outboxEvents))).flat().filter((e) => e.correlation_id === correlation);
    expect(tagged_.map((e) => [e.event_type, e.tenant_id])).toEqual([['tenant.suspended', active.id]]);
    const audit = await auditRows(`tenant_id=__admin__&operation=bulkActionTenants&request_id=${res.headers['x-request-id']}`);
    expect(audit).toHaveLength(1);
    expect(audit[0].metadata).toMatchObject({ action: 'SUSPEND', total_matched: 3, succeeded: 1, failed: 1, skipped: 1 });
  });

  it('REACTIVATE and CLOSE follow the same rules', async () => {
    const tag = idem('tag');
    const a = await tagged(tag);
    const s = await tagged(tag);
    expect((await adm('PATCH', `/v1/admin/tenants/${s.id}`, { status: 'SUSPENDED' })).statusCode).toBe(200);
    const re = json(await bulkTenants({ filter: { search: tag }, action: 'REACTIVATE', idempotency_key: idem('t') }));
    expect(re.succeeded).toEqual([{ id: s.id }]);
    expect(re.skipped).toEqual([{ id: a.id, reason: 'ALREADY_IN_TARGET_STATE' }]);
    const close = json(await bulkTenants({ filter: { search: tag, status: 'ACTIVE' }, action: 'CLOSE', idempotency_key: idem('t') }));
    expect(ids(close.succeeded)).toEqual([a.id, s.id].sort());
    const again = json(await bulkTenants({ filter: { search: tag }, action: 'CLOSE', idempotency_key: idem('t') }));
    expect(again.skipped.map((r: any) => r.reason)).toEqual(['ALREADY_IN_TARGET_STATE', 'ALREADY_IN_TARGET_STATE']);
    const closedEvents = (await Promise.all([a.id, s.id].map(outboxEvents))).flat().filter((e) => e.event_type === 'tenant.closed');
    expect(closedEvents).toHaveLength(2);
  });

  it('a reused key with another filter is 409 IDEMPOTENCY_MISMATCH; concurrent duplicates apply once and answer alike', async () => {
    const tag = idem('tag');
    const t = await tagged(tag);
    const key = idem('t');
    expect((await bulkTenants({ filter: { search: tag, status: 'ACTIVE' }, action: 'SUSPEND', idempotency_key: key })).statusCode).toBe(200);
    expectError(await bulkTenants({ filter: { search: tag, status: 'SUSPENDED' }, action: 'SUSPEND', idempotency_key: key }), 409, 'IDEMPOTENCY_MISMATCH');
    expect(json(await adm('GET', `/v1/admin/tenants/${t.id}`)).status).toBe('SUSPENDED');

    const body = { filter: { search: tag }, action: 'REACTIVATE', idempotency_key: idem('t') };
    const [r1, r2] = await Promise.all([bulkTenants(body), bulkTenants(body)]);
    expect([r1.statusCode, r2.statusCode]).toEqual([200, 200]);
    expect(json(r1)).toEqual(json(r2));
    expect(json(r1).succeeded).toEqual([{ id: t.id }]);
    expect((await outboxEvents(t.id)).filter((e) => e.event_type === 'tenant.reactivated')).toHaveLength(1);
  });

  it('a duplicate of a call still in progress waits, then answers 503 INTERNAL_ERROR; nothing is applied', async () => {
    const tag = idem('tag');
    const t = await tagged(tag);
    const body = { filter: { search: tag }, action: 'SUSPEND', idempotency_key: idem('t') };
    const { idempotency_key: key, ...payload } = body;
    // A claim left by a concurrent call (same payload) that has not finished.
    await h.system.redis.set(h.system.keys.bulkIdempotency('tenants-bulk', key), JSON.stringify({ h: payloadHash(payload), t: 'other', s: 'pending' }), 'PX', 60_000);
    expectError(await bulkTenants(body), 503, 'INTERNAL_ERROR');
    expect(json(await adm('GET', `/v1/admin/tenants/${t.id}`)).status).toBe('ACTIVE');
  }, 20_000);

  it('the POST route no longer collides with the tenant routes (no 405)', async () => {
    const res = await bulkTenants({ filter: { search: idem('none') }, action: 'SUSPEND', idempotency_key: idem('t') });
    expect(res.statusCode, res.body).toBe(200);
    expect(json(res)).toMatchObject({ total_matched: 0, succeeded: [], failed: [], skipped: [] });
    const t = await createTenant(h, { budgets: [] });
    expect((await adm('GET', `/v1/admin/tenants/${t.id}`)).statusCode).toBe(200);
    expectError(await h.admin.inject({ method: 'DELETE', url: '/v1/admin/tenants/bulk-action', headers: ADMIN }), 405, 'INVALID_REQUEST');
  });

  it('requires the admin key', async () => {
    const t = await createTenant(h, { budgets: [] });
    const res = await h.admin.inject({ method: 'POST', url: '/v1/admin/tenants/bulk-action', headers: { 'x-cycles-api-key': t.key }, payload: { filter: { status: 'ACTIVE' }, action: 'SUSPEND', idempotency_key: idem('t') } });
    expect(res.statusCode).toBeGreaterThanOrEqual(401);
    expect(res.statusCode).toBeLessThan(404);
    expect(json(await adm('GET', `/v1/admin/tenants/${t.id}`)).status).toBe('ACTIVE');
  });
});
