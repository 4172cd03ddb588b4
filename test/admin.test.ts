import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, USD, createTenant, idem, invariantHolds, json, startHarness, uniqueTenantId, type Harness, type TestTenant } from './helpers.js';

/**
 * Governance plane: tenants (admin digest §2.1), budgets (§2.2), funding arithmetic and its worked
 * examples (§3.1), budget status machine (§3.2, §3.3), and the runtime effects of CLOSED tenants
 * (runtime digest §7.7).
 */

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => h.close());

const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const enc = encodeURIComponent;
const amt = (amount: number, unit = USD) => ({ unit, amount });

function adm(method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: unknown, headers: Record<string, string> = ADMIN) {
  return h.admin.inject({ method, url, headers, ...(payload === undefined ? {} : { payload: payload as object }) });
}

function expectError(res: LightMyRequestResponse, status: number, code: string, message?: string): any {
  expect(res.statusCode, res.body).toBe(status);
  const body = json(res);
  expect(body.error, res.body).toBe(code);
  expect(body.request_id).toBe(res.headers['x-request-id']);
  expect(body.trace_id).toBe(res.headers['x-cycles-trace-id']);
  for (const k of Object.keys(body)) expect(['error', 'message', 'request_id', 'trace_id', 'details']).toContain(k);
  if (message !== undefined) expect(body.message).toBe(message);
  return body;
}

const q = (t: TestTenant, rel: string, unit = USD) => `scope=${enc(t.scope(rel))}&unit=${unit}`;

function fund(t: TestTenant, rel: string, operation: string, amount: number, extra: Record<string, unknown> = {}) {
  return adm('POST', `/v1/admin/budgets/fund?${q(t, rel)}&tenant_id=${t.id}`, { operation, amount: amt(amount), ...extra });
}

async function lookup(t: TestTenant, rel: string, unit = USD): Promise<any> {
  const res = await adm('GET', `/v1/admin/budgets/lookup?${q(t, rel, unit)}`);
  expect(res.statusCode, res.body).toBe(200);
  return json(res);
}

/** {A, S, V, D, R} of a ledger, cross-checked between the admin lookup and runtime /v1/balances. */
async function state(t: TestTenant, rel: string) {
  const l = await lookup(t, rel);
  const b = await t.balance(rel);
  const s = { A: l.allocated.amount, S: l.spent.amount, V: l.reserved.amount, D: l.debt.amount, R: l.remaining.amount };
  expect({ A: b.allocated.amount, S: b.spent.amount, V: b.reserved.amount, D: b.debt.amount, R: b.remaining.amount }).toEqual(s);
  expect(invariantHolds(l)).toBe(true);
  expect(invariantHolds(b)).toBe(true);
  expect(b.is_over_limit).toBe(l.is_over_limit);
  return { ...s, over: l.is_over_limit as boolean, status: l.status as string };
}

/** The fund response exactly (admin digest §3.1 BudgetFundingResponse). */
function expectFunding(res: LightMyRequestResponse, operation: string, prev: { A: number; R: number; D: number; S: number }, next: { A: number; R: number; D: number; S: number }) {
  expect(res.statusCode, res.body).toBe(200);
  const body = json(res);
  expect(typeof body.timestamp).toBe('string');
  expect(Number.isNaN(Date.parse(body.timestamp))).toBe(false);
  const { timestamp: _ts, ...rest } = body;
  expect(rest).toEqual({
    operation,
    previous_allocated: amt(prev.A), new_allocated: amt(next.A),
    previous_remaining: amt(prev.R), new_remaining: amt(next.R),
    previous_debt: amt(prev.D), new_debt: amt(next.D),
    previous_spent: amt(prev.S), new_spent: amt(next.S),
  });
  return body;
}

/** The worked-example state {A1000, S600, V100, D0, R300}, reached through reserve/commit only. */
async function workedState(): Promise<TestTenant> {
  const t = await createTenant(h, { budgets: [['workspace:f', 1000]] });
  const r1 = await t.reserveOk(600, { ws: 'f' });
  const c = await t.commit(r1, 600);
  expect(c.statusCode, c.body).toBe(200);
  await t.reserveOk(100, { ws: 'f' });
  expect(await state(t, 'workspace:f')).toEqual({ A: 1000, S: 600, V: 100, D: 0, R: 300, over: false, status: 'ACTIVE' });
  return t;
}

/** {A1000, S1000, V0, D200, R−200} through an ALLOW_WITH_OVERDRAFT commit (overdraft_limit 500). */
async function debtState(): Promise<TestTenant> {
  const t = await createTenant(h, { budgets: [['workspace:d', 1000, { overdraft: 500 }]] });
  const rid = await t.reserveOk(800, { ws: 'd', overage_policy: 'ALLOW_WITH_OVERDRAFT' });
  const c = await t.commit(rid, 1200);
  expect(c.statusCode, c.body).toBe(200);
  expect(json(c).charged).toEqual(amt(1200));
  expect(await state(t, 'workspace:d')).toEqual({ A: 1000, S: 1000, V: 0, D: 200, R: -200, over: false, status: 'ACTIVE' });
  return t;
}

describe('tenants', () => {
  it('create → 201; same id and name → 200 with the stored tenant; another name → 409 DUPLICATE_RESOURCE', async () => {
    const id = uniqueTenantId('adm');
    const c = await adm('POST', '/v1/admin/tenants', { tenant_id: id, name: 'Acme Corp', metadata: { tier: 'gold' } });
    expect(c.statusCode, c.body).toBe(201);
    const created = json(c);
    expect(created).toMatchObject({ tenant_id: id, name: 'Acme Corp', status: 'ACTIVE', metadata: { tier: 'gold' } });
    expect(Number.isNaN(Date.parse(created.created_at))).toBe(false);

    const again = await adm('POST', '/v1/admin/tenants', { tenant_id: id, name: 'Acme Corp' });
    expect(again.statusCode, again.body).toBe(200);
    expect(json(again)).toEqual(created);
    // Other differing fields are ignored on the idempotent path.
    const again2 = await adm('POST', '/v1/admin/tenants', { tenant_id: id, name: 'Acme Corp', max_reservation_extensions: 2 });
    expect(again2.statusCode, again2.body).toBe(200);
    expect(json(again2)).toEqual(created);

    expectError(await adm('POST', '/v1/admin/tenants', { tenant_id: id, name: 'Other Corp' }), 409, 'DUPLICATE_RESOURCE');
    const get = await adm('GET', `/v1/admin/tenants/${id}`);
    expect(get.statusCode).toBe(200);
    expect(json(get)).toEqual(created);
  });

  it('GET of an unknown tenant → 404 TENANT_NOT_FOUND; tenant routes need the admin key', async () => {
    expectError(await adm('GET', `/v1/admin/tenants/${uniqueTenantId('ghost')}`), 404, 'TENANT_NOT_FOUND');
    const t = await createTenant(h);
    expectError(await adm('GET', `/v1/admin/tenants/${t.id}`, undefined, {}), 401, 'UNAUTHORIZED');
    expectError(await adm('GET', `/v1/admin/tenants/${t.id}`, undefined, { 'x-cycles-api-key': t.key }), 401, 'UNAUTHORIZED');
    expectError(await adm('POST', '/v1/admin/tenants', { tenant_id: uniqueTenantId(), name: 'x' }, { 'x-admin-api-key': 'nope' }), 401, 'UNAUTHORIZED', 'Invalid admin API key');
  });

  it('PATCH status transitions: ACTIVE ⇄ SUSPENDED, → CLOSED; CLOSED → ACTIVE/SUSPENDED is 400; CLOSED → CLOSED is 200', async () => {
    const t = await createTenant(h);
    const patch = (body: unknown) => adm('PATCH', `/v1/admin/tenants/${t.id}`, body);

    const s = await patch({ status: 'SUSPENDED' });
    expect(s.statusCode, s.body).toBe(200);
    expect(json(s).status).toBe('SUSPENDED');
    expect(typeof json(s).suspended_at).toBe('string');

    const a = await patch({ status: 'ACTIVE' });
    expect(a.statusCode, a.body).toBe(200);
    expect(json(a).status).toBe('ACTIVE');
    expect((await patch({ status: 'ACTIVE' })).statusCode).toBe(200);

    const n = await patch({ name: 'Renamed', default_reservation_ttl_ms: 30_000 });
    expect(n.statusCode, n.body).toBe(200);
    expect(json(n)).toMatchObject({ name: 'Renamed', status: 'ACTIVE', default_reservation_ttl_ms: 30_000 });

    const closed = await patch({ status: 'CLOSED' });
    expect(closed.statusCode, closed.body).toBe(200);
    expect(json(closed).status).toBe('CLOSED');
    expect(typeof json(closed).closed_at).toBe('string');

    const before = json(await adm('GET', `/v1/admin/tenants/${t.id}`));
    expectError(await patch({ status: 'ACTIVE' }), 400, 'INVALID_REQUEST', 'Cannot transition from CLOSED');
    expectError(await patch({ status: 'SUSPENDED' }), 400, 'INVALID_REQUEST', 'Cannot transition from CLOSED');
    expect(json(await adm('GET', `/v1/admin/tenants/${t.id}`))).toEqual(before);

    const cc = await patch({ status: 'CLOSED' });
    expect(cc.statusCode, cc.body).toBe(200);
    expect(json(cc).status).toBe('CLOSED');
    expect(json(cc).closed_at).toBe(before.closed_at);
    // Non-status fields of a CLOSED tenant may still change.
    const rn = await patch({ name: 'Archived' });
    expect(rn.statusCode, rn.body).toBe(200);
    expect(json(rn)).toMatchObject({ name: 'Archived', status: 'CLOSED' });
  });

  it('PATCH errors: unknown tenant 404, bad status 400, unknown field 400 — nothing changes', async () => {
    expectError(await adm('PATCH', `/v1/admin/tenants/${uniqueTenantId('ghost')}`, { name: 'x' }), 404, 'TENANT_NOT_FOUND');
    const t = await createTenant(h);
    const before = json(await adm('GET', `/v1/admin/tenants/${t.id}`));
    expectError(await adm('PATCH', `/v1/admin/tenants/${t.id}`, { status: 'DELETED' }), 400, 'INVALID_REQUEST');
    expectError(await adm('PATCH', `/v1/admin/tenants/${t.id}`, { reservation_expiry_policy: 'GRACE_ONLY' }), 400, 'INVALID_REQUEST');
    expectError(await adm('PATCH', `/v1/admin/tenants/${t.id}`, { max_reservation_ttl_ms: 86_400_001 }), 400, 'INVALID_REQUEST');
    expect(json(await adm('GET', `/v1/admin/tenants/${t.id}`))).toEqual(before);
  });

  it('a CLOSED tenant: the close cascade revokes its keys, releases its holds and closes its budgets; reads still work', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(100);
    expect((await adm('PATCH', `/v1/admin/tenants/${t.id}`, { status: 'CLOSED' })).statusCode).toBe(200);
    // The tenant's key is revoked by the cascade: the runtime refuses it before any ledger check.
    expect((await t.reserve(50)).statusCode).toBe(401);
    const got = await h.runtime.inject({ method: 'GET', url: `/v1/reservations/${rid}`, headers: { 'x-admin-api-key': ADMIN_KEY } });
    expect(got.statusCode, got.body).toBe(200);
    expect(json(got).status).toBe('RELEASED');
    const budgets = json(await adm('GET', `/v1/admin/budgets?tenant_id=${t.id}`)).ledgers as any[];
    expect(budgets.length).toBeGreaterThan(0);
    for (const b of budgets) {
      expect(b.status).toBe('CLOSED');
      expect(b.reserved.amount).toBe(0);
    }
    expectError(await adm('POST', '/v1/admin/budgets', { tenant_id: t.id, scope: t.scope('workspace:late'), unit: USD, allocated: amt(10) }), 409, 'TENANT_CLOSED');
  });
});

describe('API keys', () => {
  it('create → 201 with the secret once; SUSPENDED tenant → 400; CLOSED tenant → 409 TENANT_CLOSED (create and revoke); unknown tenant → 404', async () => {
    const t = await createTenant(h);
    const c = await adm('POST', '/v1/admin/api-keys', { tenant_id: t.id, name: 'ci', permissions: ['balances:read'] });
    expect(c.statusCode, c.body).toBe(201);
    const key = json(c);
    expect(Object.keys(key).sort()).toEqual(['created_at', 'expires_at', 'key_id', 'key_prefix', 'key_secret', 'permissions', 'tenant_id']);
    expect(key.key_secret.startsWith('cyc_live_')).toBe(true);
    expect(key.key_prefix).toBe(key.key_secret.slice(0, 14));
    expect(key.permissions).toEqual(['balances:read']);
    // Default lifetime 90 days.
    const lifetime = Date.parse(key.expires_at) - Date.parse(key.created_at);
    expect(Math.abs(lifetime - 90 * 86_400_000)).toBeLessThan(5000);

    expectError(await adm('POST', '/v1/admin/api-keys', { tenant_id: uniqueTenantId('ghost'), name: 'x' }), 404, 'TENANT_NOT_FOUND');
    expect((await adm('PATCH', `/v1/admin/tenants/${t.id}`, { status: 'SUSPENDED' })).statusCode).toBe(200);
    expectError(await adm('POST', '/v1/admin/api-keys', { tenant_id: t.id, name: 'x' }), 400, 'INVALID_REQUEST');
    expect((await adm('PATCH', `/v1/admin/tenants/${t.id}`, { status: 'CLOSED' })).statusCode).toBe(200);
    expectError(await adm('POST', '/v1/admin/api-keys', { tenant_id: t.id, name: 'x' }), 409, 'TENANT_CLOSED');
    expectError(await adm('DELETE', `/v1/admin/api-keys/${key.key_id}`), 409, 'TENANT_CLOSED');
  });
});

describe('budgets', () => {
  it('a tenant key with budgets:write creates budgets for its own tenant; sending tenant_id with it → 400; another tenant’s scope → 400 (AD-028)', async () => {
    const t = await createTenant(h);
    const other = await createTenant(h);
    const k = await adm('POST', '/v1/admin/api-keys', { tenant_id: t.id, name: 'w', permissions: ['budgets:write', 'budgets:read'] });
    const key = { 'x-cycles-api-key': json(k).key_secret };
    const ok = await adm('POST', '/v1/admin/budgets', { scope: t.scope('workspace:own'), unit: USD, allocated: amt(42) }, key);
    expect(ok.statusCode, ok.body).toBe(201);
    expect(json(ok)).toMatchObject({ tenant_id: t.id, scope: t.scope('workspace:own'), allocated: amt(42) });
    const beforeT = await t.ledger();
    const beforeO = await other.ledger();
    expectError(await adm('POST', '/v1/admin/budgets', { tenant_id: t.id, scope: t.scope('workspace:two'), unit: USD, allocated: amt(1) }, key), 400, 'INVALID_REQUEST');
    const cross = await adm('POST', '/v1/admin/budgets', { scope: other.scope('workspace:x'), unit: USD, allocated: amt(1) }, key);
    expectError(cross, 400, 'INVALID_REQUEST');
    expect(await t.ledger()).toEqual(beforeT);
    expect(await other.ledger()).toEqual(beforeO);
  });

  it('create → 201 with the full initial ledger; duplicate (scope, unit) → 409; another unit at the same scope → 201', async () => {
    const t = await createTenant(h, { budgets: [] });
    const body = { tenant_id: t.id, scope: t.scope('workspace:Eng'), unit: USD, allocated: amt(5000), overdraft_limit: amt(250), commit_overage_policy: 'REJECT' };
    const c = await adm('POST', '/v1/admin/budgets', body);
    expect(c.statusCode, c.body).toBe(201);
    const led = json(c);
    expect(typeof led.ledger_id).toBe('string');
    expect(led).toMatchObject({
      tenant_id: t.id,
      scope: t.scope('workspace:eng'), // lower-cased on write (admin digest §2.2)
      unit: USD,
      allocated: amt(5000),
      remaining: amt(5000),
      reserved: amt(0),
      spent: amt(0),
      debt: amt(0),
      overdraft_limit: amt(250),
      is_over_limit: false,
      status: 'ACTIVE',
      commit_overage_policy: 'REJECT',
    });
    expect(Number.isNaN(Date.parse(led.created_at))).toBe(false);

    const before = await t.ledger();
    expectError(await adm('POST', '/v1/admin/budgets', body), 409, 'DUPLICATE_RESOURCE');
    expectError(await adm('POST', '/v1/admin/budgets', { ...body, scope: t.scope('workspace:eng'), allocated: amt(1) }), 409, 'DUPLICATE_RESOURCE');
    expect(await t.ledger()).toEqual(before);
    expect((await lookup(t, 'workspace:eng')).allocated).toEqual(amt(5000));

    const tokens = await adm('POST', '/v1/admin/budgets', { tenant_id: t.id, scope: t.scope('workspace:eng'), unit: 'TOKENS', allocated: amt(9, 'TOKENS') });
    expect(tokens.statusCode, tokens.body).toBe(201);
    expect((await lookup(t, 'workspace:eng', 'TOKENS')).remaining).toEqual(amt(9, 'TOKENS'));
  });

  it('unknown tenant → 404 TENANT_NOT_FOUND; scope of another tenant → 400; admin without tenant_id → 400', async () => {
    const ghost = uniqueTenantId('ghost');
    expectError(await adm('POST', '/v1/admin/budgets', { tenant_id: ghost, scope: `tenant:${ghost}`, unit: USD, allocated: amt(1) }), 404, 'TENANT_NOT_FOUND');
    expectError(await adm('GET', `/v1/admin/budgets/lookup?scope=${enc(`tenant:${ghost}`)}&unit=${USD}`), 404, 'BUDGET_NOT_FOUND');
    const t = await createTenant(h);
    const other = await createTenant(h);
    const before = await t.ledger();
    expectError(await adm('POST', '/v1/admin/budgets', { tenant_id: t.id, scope: other.scope('workspace:x'), unit: USD, allocated: amt(1) }), 400, 'INVALID_REQUEST');
    expectError(await adm('POST', '/v1/admin/budgets', { scope: t.scope('workspace:x'), unit: USD, allocated: amt(1) }), 400, 'INVALID_REQUEST');
    expect(await t.ledger()).toEqual(before);
  });

  it('lookup: 404 BUDGET_NOT_FOUND for an unknown (scope, unit); missing unit → 400', async () => {
    const t = await createTenant(h);
    expectError(await adm('GET', `/v1/admin/budgets/lookup?${q(t, 'workspace:nope')}`), 404, 'BUDGET_NOT_FOUND');
    expectError(await adm('GET', `/v1/admin/budgets/lookup?${q(t, 'workspace:prod', 'TOKENS')}`), 404, 'BUDGET_NOT_FOUND');
    expectError(await adm('GET', `/v1/admin/budgets/lookup?scope=${enc(t.scope())}`), 400, 'INVALID_REQUEST');
    expect((await lookup(t, 'workspace:prod')).allocated).toEqual(amt(100_000));
  });

  it('budget create on a SUSPENDED tenant → 400, on a CLOSED tenant → 409 TENANT_CLOSED', async () => {
    const t = await createTenant(h);
    expect((await adm('PATCH', `/v1/admin/tenants/${t.id}`, { status: 'SUSPENDED' })).statusCode).toBe(200);
    expectError(await adm('POST', '/v1/admin/budgets', { tenant_id: t.id, scope: t.scope('workspace:s'), unit: USD, allocated: amt(1) }), 400, 'INVALID_REQUEST');
    expect((await adm('PATCH', `/v1/admin/tenants/${t.id}`, { status: 'CLOSED' })).statusCode).toBe(200);
    expectError(await adm('POST', '/v1/admin/budgets', { tenant_id: t.id, scope: t.scope('workspace:s'), unit: USD, allocated: amt(1) }), 409, 'TENANT_CLOSED');
    expectError(await adm('GET', `/v1/admin/budgets/lookup?${q(t, 'workspace:s')}`), 404, 'BUDGET_NOT_FOUND');
  });
});

describe('funding arithmetic (admin digest §3.1 worked examples)', () => {
  const W = 'workspace:f';
  const base = { A: 1000, R: 300, D: 0, S: 600 };

  it('CREDIT 500 on {A1000,S600,V100,D0,R300} ⇒ A1500 R800', async () => {
    const t = await workedState();
    expectFunding(await fund(t, W, 'CREDIT', 500), 'CREDIT', base, { A: 1500, R: 800, D: 0, S: 600 });
    expect(await state(t, W)).toMatchObject({ A: 1500, S: 600, V: 100, D: 0, R: 800 });
  });

  it('DEBIT 300 ⇒ A700 R0 (remaining == amount is allowed)', async () => {
    const t = await workedState();
    expectFunding(await fund(t, W, 'DEBIT', 300), 'DEBIT', base, { A: 700, R: 0, D: 0, S: 600 });
    expect(await state(t, W)).toMatchObject({ A: 700, S: 600, V: 100, D: 0, R: 0 });
  });

  it('DEBIT 301 ⇒ 409 BUDGET_EXCEEDED, ledger unchanged', async () => {
    const t = await workedState();
    const before = await t.ledger();
    expectError(await fund(t, W, 'DEBIT', 301), 409, 'BUDGET_EXCEEDED');
    expect(await t.ledger()).toEqual(before);
    expect(await state(t, W)).toMatchObject({ A: 1000, S: 600, V: 100, D: 0, R: 300 });
  });

  it('RESET 800 ⇒ A800 R100 (spent, reserved, debt preserved); RESET below usage goes negative', async () => {
    const t = await workedState();
    expectFunding(await fund(t, W, 'RESET', 800), 'RESET', base, { A: 800, R: 100, D: 0, S: 600 });
    expect(await state(t, W)).toMatchObject({ A: 800, S: 600, V: 100, D: 0, R: 100 });
    expectFunding(await fund(t, W, 'RESET', 500), 'RESET', { A: 800, R: 100, D: 0, S: 600 }, { A: 500, R: -200, D: 0, S: 600 });
    expect(await state(t, W)).toMatchObject({ A: 500, S: 600, V: 100, D: 0, R: -200 });
  });

  it('RESET_SPENT 1000 ⇒ S0 R900; with a spent override 250 ⇒ S250 R650', async () => {
    const t = await workedState();
    expectFunding(await fund(t, W, 'RESET_SPENT', 1000), 'RESET_SPENT', base, { A: 1000, R: 900, D: 0, S: 0 });
    expect(await state(t, W)).toMatchObject({ A: 1000, S: 0, V: 100, D: 0, R: 900 });
    const t2 = await workedState();
    expectFunding(await fund(t2, W, 'RESET_SPENT', 1000, { spent: amt(250) }), 'RESET_SPENT', base, { A: 1000, R: 650, D: 0, S: 250 });
    expect(await state(t2, W)).toMatchObject({ A: 1000, S: 250, V: 100, D: 0, R: 650 });
  });

  it('REPAY_DEBT 200 on {A1000,S1000,V0,D200,R−200} ⇒ D0 R0', async () => {
    const t = await debtState();
    const prev = { A: 1000, R: -200, D: 200, S: 1000 };
    expectFunding(await fund(t, 'workspace:d', 'REPAY_DEBT', 200), 'REPAY_DEBT', prev, { A: 1000, R: 0, D: 0, S: 1000 });
    expect(await state(t, 'workspace:d')).toMatchObject({ A: 1000, S: 1000, V: 0, D: 0, R: 0 });
  });

  it('REPAY_DEBT 300 (surplus acts as CREDIT) ⇒ D0 A1100 R100', async () => {
    const t = await debtState();
    const prev = { A: 1000, R: -200, D: 200, S: 1000 };
    expectFunding(await fund(t, 'workspace:d', 'REPAY_DEBT', 300), 'REPAY_DEBT', prev, { A: 1100, R: 100, D: 0, S: 1000 });
    expect(await state(t, 'workspace:d')).toMatchObject({ A: 1100, S: 1000, V: 0, D: 0, R: 100 });
  });

  it('REPAY_DEBT 50 (partial) ⇒ D150 R−150, allocated unchanged', async () => {
    const t = await debtState();
    expectFunding(await fund(t, 'workspace:d', 'REPAY_DEBT', 50), 'REPAY_DEBT', { A: 1000, R: -200, D: 200, S: 1000 }, { A: 1000, R: -150, D: 150, S: 1000 });
  });

  it('RESET_SPENT 1000 on D=1200 ⇒ R = −200 (valid)', async () => {
    const t = await createTenant(h, { budgets: [['workspace:d', 1000, { overdraft: 1500 }]] });
    const rid = await t.reserveOk(1000, { ws: 'd', overage_policy: 'ALLOW_WITH_OVERDRAFT' });
    const c = await t.commit(rid, 2200);
    expect(c.statusCode, c.body).toBe(200);
    expect(await state(t, 'workspace:d')).toMatchObject({ A: 1000, S: 1000, V: 0, D: 1200, R: -1200 });
    expectFunding(await fund(t, 'workspace:d', 'RESET_SPENT', 1000), 'RESET_SPENT', { A: 1000, R: -1200, D: 1200, S: 1000 }, { A: 1000, R: -200, D: 1200, S: 0 });
    expect(await state(t, 'workspace:d')).toMatchObject({ A: 1000, S: 0, V: 0, D: 1200, R: -200 });
  });

  it('a ledger that is already negative cannot be debited at all', async () => {
    const t = await debtState();
    const before = await t.ledger();
    expectError(await fund(t, 'workspace:d', 'DEBIT', 0 + 1), 409, 'BUDGET_EXCEEDED');
    expect(await t.ledger()).toEqual(before);
  });

  it('fund errors: unknown budget 404, admin without tenant_id 400, tenant_id of another tenant 403, negative RESET_SPENT spent 400 — nothing changes', async () => {
    const t = await workedState();
    const other = await createTenant(h);
    const before = await t.ledger();
    expectError(await fund(t, 'workspace:none', 'CREDIT', 5), 404, 'BUDGET_NOT_FOUND');
    expectError(await adm('POST', `/v1/admin/budgets/fund?${q(t, W)}`, { operation: 'CREDIT', amount: amt(5) }), 400, 'INVALID_REQUEST');
    expectError(await adm('POST', `/v1/admin/budgets/fund?${q(t, W)}&tenant_id=${other.id}`, { operation: 'CREDIT', amount: amt(5) }), 403, 'FORBIDDEN');
    expectError(await fund(t, W, 'RESET_SPENT', 1000, { spent: amt(-1) }), 400, 'INVALID_REQUEST');
    expectError(await adm('POST', `/v1/admin/budgets/fund?${q(t, W)}&tenant_id=${t.id}`, { operation: 'CREDIT', amount: amt(5) }, {}), 401, 'UNAUTHORIZED');
    expect(await t.ledger()).toEqual(before);
  });

  it('a tenant key with budgets:write may fund its own budgets, not another tenant’s; without it → 403', async () => {
    const t = await workedState();
    const other = await createTenant(h);
    const mk = async (permissions: string[]) => {
      const r = await adm('POST', '/v1/admin/api-keys', { tenant_id: t.id, name: 'funder', permissions });
      expect(r.statusCode, r.body).toBe(201);
      return json(r).key_secret as string;
    };
    const writer = await mk(['budgets:write']);
    const reader = await mk(['budgets:read']);
    const ok = await adm('POST', `/v1/admin/budgets/fund?${q(t, W)}`, { operation: 'CREDIT', amount: amt(7) }, { 'x-cycles-api-key': writer });
    expectFunding(ok, 'CREDIT', base, { A: 1007, R: 307, D: 0, S: 600 });
    const beforeOther = await other.ledger();
    const cross = await adm('POST', `/v1/admin/budgets/fund?${q(other, '')}`, { operation: 'CREDIT', amount: amt(7) }, { 'x-cycles-api-key': writer });
    expect(cross.statusCode, cross.body).toBe(403);
    expect(await other.ledger()).toEqual(beforeOther);
    const before = await t.ledger();
    const denied = await adm('POST', `/v1/admin/budgets/fund?${q(t, W)}`, { operation: 'CREDIT', amount: amt(7) }, { 'x-cycles-api-key': reader });
    expectError(denied, 403, 'INSUFFICIENT_PERMISSIONS');
    expect(await t.ledger()).toEqual(before);
  });
});

describe('fund idempotency', () => {
  it('same key + same body replays the same numbers and applies once; same key + different body → 409', async () => {
    const t = await workedState();
    const key = idem('fund');
    const first = expectFunding(await fund(t, 'workspace:f', 'CREDIT', 100, { idempotency_key: key }), 'CREDIT', { A: 1000, R: 300, D: 0, S: 600 }, { A: 1100, R: 400, D: 0, S: 600 });
    const replay = await fund(t, 'workspace:f', 'CREDIT', 100, { idempotency_key: key });
    const { timestamp: _a, ...r1 } = first;
    const { timestamp: _b, ...r2 } = json(replay);
    expect(replay.statusCode, replay.body).toBe(200);
    expect(r2).toEqual(r1);
    expect(await state(t, 'workspace:f')).toMatchObject({ A: 1100, R: 400 });

    const before = await t.ledger();
    expectError(await fund(t, 'workspace:f', 'CREDIT', 101, { idempotency_key: key }), 409, 'IDEMPOTENCY_MISMATCH');
    expectError(await fund(t, 'workspace:f', 'DEBIT', 100, { idempotency_key: key }), 409, 'IDEMPOTENCY_MISMATCH');
    expect(await t.ledger()).toEqual(before);

    // A fresh key applies again.
    expectFunding(await fund(t, 'workspace:f', 'CREDIT', 100, { idempotency_key: idem('fund') }), 'CREDIT', { A: 1100, R: 400, D: 0, S: 600 }, { A: 1200, R: 500, D: 0, S: 600 });
  });

  it('concurrent replays of one keyed CREDIT apply it exactly once', async () => {
    const t = await workedState();
    const key = idem('fund-par');
    const results = await Promise.all(Array.from({ length: 20 }, () => fund(t, 'workspace:f', 'CREDIT', 250, { idempotency_key: key })));
    for (const r of results) {
      expect(r.statusCode, r.body).toBe(200);
      expect(json(r).new_allocated).toEqual(amt(1250));
      expect(json(r).previous_allocated).toEqual(amt(1000));
    }
    expect(await state(t, 'workspace:f')).toMatchObject({ A: 1250, R: 550 });
  });
});

describe('budget status: freeze / unfreeze (admin digest §3.2, §3.3)', () => {
  const url = (t: TestTenant, op: 'freeze' | 'unfreeze', rel = 'workspace:prod') => `/v1/admin/budgets/${op}?${q(t, rel)}`;

  it('ACTIVE → FROZEN → ACTIVE; freezing twice and unfreezing an ACTIVE budget → 409; missing budget → 404', async () => {
    const t = await createTenant(h);
    const f = await adm('POST', url(t, 'freeze'), { reason: 'incident' });
    expect(f.statusCode, f.body).toBe(200);
    expect(json(f)).toMatchObject({ scope: t.scope('workspace:prod'), status: 'FROZEN', allocated: amt(100_000) });

    const frozen = await lookup(t, 'workspace:prod');
    const again = expectError(await adm('POST', url(t, 'freeze'), {}), 409, 'INVALID_REQUEST');
    expect(again.message).toBe('Budget is already frozen');
    expect(await lookup(t, 'workspace:prod')).toEqual(frozen);

    const u = await adm('POST', url(t, 'unfreeze'));
    expect(u.statusCode, u.body).toBe(200);
    expect(json(u).status).toBe('ACTIVE');
    const active = await lookup(t, 'workspace:prod');
    const twice = expectError(await adm('POST', url(t, 'unfreeze'), {}), 409, 'INVALID_REQUEST');
    expect(twice.message).toBe('Budget is not frozen');
    expect(await lookup(t, 'workspace:prod')).toEqual(active);

    expectError(await adm('POST', url(t, 'freeze', 'workspace:none')), 404, 'BUDGET_NOT_FOUND');
    expectError(await adm('POST', url(t, 'freeze'), { reason: 'x', force: true }), 400, 'INVALID_REQUEST');
    expectError(await adm('POST', url(t, 'freeze'), {}, { 'x-cycles-api-key': t.key }), 401, 'UNAUTHORIZED');
    expect((await lookup(t, 'workspace:prod')).status).toBe('ACTIVE');
  });

  it('every fund operation on a FROZEN budget → 409 BUDGET_FROZEN, ledger unchanged; PATCH is still allowed', async () => {
    const t = await workedState();
    expect((await adm('POST', url(t, 'freeze', 'workspace:f'))).statusCode).toBe(200);
    const before = await lookup(t, 'workspace:f');
    for (const [op, extra] of [['CREDIT', {}], ['DEBIT', {}], ['RESET', {}], ['RESET_SPENT', { spent: amt(1) }], ['REPAY_DEBT', {}]] as const) {
      expectError(await fund(t, 'workspace:f', op, 10, extra), 409, 'BUDGET_FROZEN');
    }
    const after = await lookup(t, 'workspace:f');
    expect(after).toEqual(before);

    const p = await adm('PATCH', `/v1/admin/budgets?${q(t, 'workspace:f')}`, { overdraft_limit: amt(50) });
    expect(p.statusCode, p.body).toBe(200);
    expect(json(p)).toMatchObject({ status: 'FROZEN', overdraft_limit: amt(50) });
  });

  it('runtime on a FROZEN budget: reserve → 409 BUDGET_FROZEN, dry-run and decide → DENY BUDGET_FROZEN; release still works', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(100);
    expect((await adm('POST', url(t, 'freeze'))).statusCode).toBe(200);
    const before = await t.ledger();
    expectError(await t.reserve(10), 409, 'BUDGET_FROZEN');
    const dry = await t.reserve(10, { dry_run: true });
    expect(json(dry)).toMatchObject({ decision: 'DENY', reason_code: 'BUDGET_FROZEN' });
    const dec = await t.post('/v1/decide', { idempotency_key: idem(), subject: { tenant: t.id, workspace: 'prod' }, action: { kind: 'k', name: 'n' }, estimate: amt(10) });
    expect(json(dec)).toMatchObject({ decision: 'DENY', reason_code: 'BUDGET_FROZEN' });
    expect(await t.ledger()).toEqual(before);
    const rel = await t.release(rid);
    expect(rel.statusCode, rel.body).toBe(200);
    expect((await lookup(t, 'workspace:prod')).reserved).toEqual(amt(0));
    expect((await adm('POST', url(t, 'unfreeze'))).statusCode).toBe(200);
    expect((await t.reserve(10)).statusCode).toBe(200);
  });
});

describe('PATCH /v1/admin/budgets', () => {
  it('changing overdraft_limit recomputes is_over_limit, which gates reservations', async () => {
    const t = await debtState(); // D200, overdraft_limit 500
    const patch = (body: unknown) => adm('PATCH', `/v1/admin/budgets?${q(t, 'workspace:d')}`, body);
    const p1 = await patch({ overdraft_limit: amt(100) });
    expect(p1.statusCode, p1.body).toBe(200);
    expect(json(p1)).toMatchObject({ overdraft_limit: amt(100), is_over_limit: true, debt: amt(200) });
    expect((await state(t, 'workspace:d')).over).toBe(true);

    // Give it headroom so only the over-limit flag can refuse the reservation.
    expect((await fund(t, 'workspace:d', 'CREDIT', 1000)).statusCode).toBe(200);
    const before = await t.ledger();
    expectError(await t.reserve(10, { ws: 'd' }), 409, 'OVERDRAFT_LIMIT_EXCEEDED');
    expect(await t.ledger()).toEqual(before);

    const p2 = await patch({ overdraft_limit: amt(200) });
    expect(json(p2)).toMatchObject({ overdraft_limit: amt(200), is_over_limit: false });
    const p3 = await patch({ overdraft_limit: amt(199) });
    expect(json(p3)).toMatchObject({ is_over_limit: true });
    const p4 = await patch({ overdraft_limit: amt(500), commit_overage_policy: 'REJECT' });
    expect(json(p4)).toMatchObject({ overdraft_limit: amt(500), is_over_limit: false, commit_overage_policy: 'REJECT' });
    expect((await t.reserve(10, { ws: 'd' })).statusCode).toBe(200);
  });

  it('REPAY_DEBT below the limit clears is_over_limit', async () => {
    const t = await debtState();
    expect(json(await adm('PATCH', `/v1/admin/budgets?${q(t, 'workspace:d')}`, { overdraft_limit: amt(100) })).is_over_limit).toBe(true);
    expectFunding(await fund(t, 'workspace:d', 'REPAY_DEBT', 150), 'REPAY_DEBT', { A: 1000, R: -200, D: 200, S: 1000 }, { A: 1000, R: -50, D: 50, S: 1000 });
    expect((await state(t, 'workspace:d')).over).toBe(false);
  });

  it('errors: overdraft unit mismatch 400 UNIT_MISMATCH, unknown budget 404, tenant key 401, unknown field 400 — nothing changes', async () => {
    const t = await createTenant(h);
    const before = await lookup(t, 'workspace:prod');
    expectError(await adm('PATCH', `/v1/admin/budgets?${q(t, 'workspace:prod')}`, { overdraft_limit: amt(5, 'TOKENS') }), 400, 'UNIT_MISMATCH');
    expectError(await adm('PATCH', `/v1/admin/budgets?${q(t, 'workspace:nope')}`, { overdraft_limit: amt(5) }), 404, 'BUDGET_NOT_FOUND');
    expectError(await adm('PATCH', `/v1/admin/budgets?${q(t, 'workspace:prod')}`, { overdraft_limit: amt(5) }, { 'x-cycles-api-key': t.key }), 401, 'UNAUTHORIZED');
    expectError(await adm('PATCH', `/v1/admin/budgets?${q(t, 'workspace:prod')}`, { allocated: amt(5) }), 400, 'INVALID_REQUEST');
    const after = await lookup(t, 'workspace:prod');
    expect(after).toEqual(before);
  });
});
