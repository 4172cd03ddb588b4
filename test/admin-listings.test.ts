import { randomBytes } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scopeFilterPermits } from '../src/domain/admin-listings.js';
import { ADMIN_KEY, TestTenant, USD, createTenant, json, startHarness, uniqueTenantId, type Harness } from './helpers.js';

/**
 * Governance listings and key operations (admin digest §0.6, §2.1, §2.2, §2.4, §4.2): list
 * tenants, budgets and API keys with filters, search, sort and cursors; the admin-plane
 * GET /v1/balances; PATCH of an API key; POST /v1/auth/validate. Other test files share this
 * Redis, so cross-tenant listings are narrowed to this file's own tenants with `search`.
 */

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => h.close());

const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const enc = encodeURIComponent;
const amt = (amount: number, unit = USD) => ({ unit, amount });
const token = () => randomBytes(4).toString('hex');

function adm(method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: unknown, headers: Record<string, string> = ADMIN) {
  return h.admin.inject({ method, url, headers, ...(payload === undefined ? {} : { payload: payload as object }) });
}

function qs(query: Record<string, string | number | boolean | undefined>): string {
  const parts = Object.entries(query).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${enc(String(v))}`);
  return parts.length > 0 ? `?${parts.join('&')}` : '';
}

function ok(res: LightMyRequestResponse, status = 200): any {
  expect(res.statusCode, res.body).toBe(status);
  return json(res);
}

function expectError(res: LightMyRequestResponse, status: number, code: string): any {
  expect(res.statusCode, res.body).toBe(status);
  const body = json(res);
  expect(body.error, res.body).toBe(code);
  expect(body.request_id).toBe(res.headers['x-request-id']);
  expect(typeof body.message).toBe('string');
  return body;
}

/** A tenant with the given id (so one test's tenants share a search token) and no budgets. */
async function namedTenant(id: string, name = id, fields: Record<string, unknown> = {}): Promise<TestTenant> {
  ok(await adm('POST', '/v1/admin/tenants', { tenant_id: id, name, ...fields }), 201);
  const k = ok(await adm('POST', '/v1/admin/api-keys', {
    tenant_id: id,
    name: 'runtime',
    permissions: ['reservations:create', 'reservations:commit', 'reservations:release', 'reservations:list', 'balances:read'],
  }), 201);
  return new TestTenant(h, id, k.key_secret);
}

async function key(tenantId: string, permissions: string[], extra: Record<string, unknown> = {}): Promise<{ key_id: string; key_secret: string }> {
  return ok(await adm('POST', '/v1/admin/api-keys', { tenant_id: tenantId, name: `k-${token()}`, permissions, ...extra }), 201);
}

function asKey(secret: string, method: 'GET' | 'POST', url: string, payload?: unknown) {
  return adm(method, url, payload, { 'x-cycles-api-key': secret });
}

async function listAll(path: string, wrapper: string, query: Record<string, string | number | boolean | undefined>): Promise<any[]> {
  const rows: any[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 50; page += 1) {
    const body = ok(await adm('GET', `${path}${qs({ ...query, cursor })}`));
    rows.push(...body[wrapper]);
    if (!body.has_more) {
      expect(body.next_cursor).toBeUndefined();
      return rows;
    }
    cursor = body.next_cursor;
    expect(typeof cursor).toBe('string');
  }
  throw new Error('too many pages');
}

// ------------------------------------------------------------------ tenants

describe('tenants: create defaults and list', () => {
  it('create → 201 with the documented runtime defaults stored and returned (AD-012)', async () => {
    const id = uniqueTenantId('def');
    const body = ok(await adm('POST', '/v1/admin/tenants', { tenant_id: id, name: 'A' }), 201);
    expect(body).toMatchObject({
      tenant_id: id, status: 'ACTIVE', default_commit_overage_policy: 'ALLOW_IF_AVAILABLE',
      default_reservation_ttl_ms: 60_000, max_reservation_ttl_ms: 3_600_000, max_reservation_extensions: 10,
    });
    expect(ok(await adm('GET', `/v1/admin/tenants/${id}`))).toEqual(body);
    // Explicit values win over the defaults.
    const other = uniqueTenantId('def');
    const custom = ok(await adm('POST', '/v1/admin/tenants', { tenant_id: other, name: 'B', max_reservation_extensions: 2, default_reservation_ttl_ms: 5000 }), 201);
    expect(custom).toMatchObject({ max_reservation_extensions: 2, default_reservation_ttl_ms: 5000, max_reservation_ttl_ms: 3_600_000 });
  });

  it('limit=1 pages newest first with a cursor, no duplicates, until has_more is false', async () => {
    const tok = `lt${token()}`;
    const ids: string[] = [];
    for (let i = 0; i < 3; i += 1) {
      ids.push((await namedTenant(`${tok}-${i}`)).id);
    }
    const p1 = ok(await adm('GET', `/v1/admin/tenants${qs({ search: tok, limit: 1 })}`));
    expect(p1.tenants).toHaveLength(1);
    expect(p1.has_more).toBe(true);
    expect(p1.tenants[0].tenant_id).toBe(ids[2]);
    const all = await listAll('/v1/admin/tenants', 'tenants', { search: tok, limit: 1 });
    expect(all.map((t) => t.tenant_id)).toEqual([...ids].reverse());
    const asc = await listAll('/v1/admin/tenants', 'tenants', { search: tok, limit: 2, sort_by: 'created_at', sort_dir: 'ASC' });
    expect(asc.map((t) => t.tenant_id)).toEqual(ids);
    for (const t of all) expect(Object.keys(t)).toEqual(expect.arrayContaining(['tenant_id', 'name', 'status', 'created_at']));
  });

  it('status, parent_tenant_id and case-insensitive search on id and name filter the rows', async () => {
    const tok = `lf${token()}`;
    const parent = await namedTenant(`${tok}-parent`, `Parent ${tok}`);
    const child = await namedTenant(`${tok}-child`, 'child', { parent_tenant_id: parent.id });
    const named = await namedTenant(uniqueTenantId('lfx'), `Zeta ${tok.toUpperCase()} Corp`);
    ok(await adm('PATCH', `/v1/admin/tenants/${child.id}`, { status: 'SUSPENDED' }));

    const suspended = await listAll('/v1/admin/tenants', 'tenants', { search: tok, status: 'SUSPENDED' });
    expect(suspended.map((t) => t.tenant_id)).toEqual([child.id]);
    const children = await listAll('/v1/admin/tenants', 'tenants', { parent_tenant_id: parent.id });
    expect(children.map((t) => t.tenant_id)).toEqual([child.id]);
    const byName = await listAll('/v1/admin/tenants', 'tenants', { search: `  zeta ${tok.toUpperCase()} ` });
    expect(byName.map((t) => t.tenant_id)).toEqual([named.id]);
    const any = await listAll('/v1/admin/tenants', 'tenants', { search: tok.toUpperCase() });
    expect(any.map((t) => t.tenant_id).sort()).toEqual([parent.id, child.id, named.id].sort());
    // Blank search is absent: the page is not empty.
    expect(ok(await adm('GET', `/v1/admin/tenants${qs({ search: '   ', limit: 1 })}`)).tenants).toHaveLength(1);
  });

  it('sort_by name/tenant_id/status page in sort order across cursors', async () => {
    const tok = `ls${token()}`;
    const names = ['delta', 'alpha', 'charlie', 'bravo'];
    const ids: string[] = [];
    for (const [i, n] of names.entries()) ids.push((await namedTenant(`${tok}-${i}`, `${n} ${tok}`)).id);
    const byName = await listAll('/v1/admin/tenants', 'tenants', { search: tok, sort_by: 'name', sort_dir: 'asc', limit: 1 });
    expect(byName.map((t) => t.name)).toEqual(['alpha', 'bravo', 'charlie', 'delta'].map((n) => `${n} ${tok}`));
    const byIdDesc = await listAll('/v1/admin/tenants', 'tenants', { search: tok, sort_by: 'tenant_id', limit: 3 });
    expect(byIdDesc.map((t) => t.tenant_id)).toEqual([...ids].sort().reverse());
    ok(await adm('PATCH', `/v1/admin/tenants/${ids[1]}`, { status: 'SUSPENDED' }));
    const byStatus = await listAll('/v1/admin/tenants', 'tenants', { search: tok, sort_by: 'status', sort_dir: 'desc', limit: 2 });
    expect(byStatus[0].tenant_id).toBe(ids[1]);
    expect(byStatus).toHaveLength(4);
  });

  it('bad parameters → 400 INVALID_REQUEST; limit is clamped; no admin key → 401', async () => {
    await createTenant(h, { budgets: [] });
    const bad = [
      { sort_by: 'bogus' }, { sort_dir: 'up' }, { status: 'GONE' }, { search: 'x'.repeat(129) },
      { cursor: `invented-${token()}` }, { limit: 'many' },
    ];
    for (const q of bad) expectError(await adm('GET', `/v1/admin/tenants${qs(q)}`), 400, 'INVALID_REQUEST');
    // 128 characters after trimming is still allowed.
    ok(await adm('GET', `/v1/admin/tenants${qs({ search: ` ${'x'.repeat(128)} ` })}`));
    // A cursor continues only the result set it was issued for.
    const p = ok(await adm('GET', `/v1/admin/tenants${qs({ limit: 1 })}`));
    expect(p.has_more).toBe(true);
    expectError(await adm('GET', `/v1/admin/tenants${qs({ limit: 1, cursor: p.next_cursor, status: 'ACTIVE' })}`), 400, 'INVALID_REQUEST');
    expectError(await adm('GET', `/v1/admin/tenants${qs({ limit: 1, cursor: p.next_cursor, sort_by: 'name' })}`), 400, 'INVALID_REQUEST');
    expect(ok(await adm('GET', `/v1/admin/tenants${qs({ limit: 0 })}`)).tenants).toHaveLength(1);
    expect(ok(await adm('GET', `/v1/admin/tenants${qs({ limit: 1000 })}`)).tenants.length).toBeLessThanOrEqual(100);
    expectError(await adm('GET', '/v1/admin/tenants', undefined, {}), 401, 'UNAUTHORIZED');
    expectError(await adm('GET', '/v1/admin/tenants', undefined, { 'x-admin-api-key': 'wrong' }), 401, 'UNAUTHORIZED');
  });
});

// ------------------------------------------------------------------ budgets

/**
 * A tenant with five ledgers: d (debt 200, utilization 1.0, overdraft 500), u (utilization 0.5),
 * z (unused), f (FROZEN) in USD_MICROCENTS, and t in TOKENS.
 */
async function budgetFixture(id = uniqueTenantId('lb')): Promise<TestTenant> {
  const t = await namedTenant(id);
  await t.budget('workspace:d', 1000, { overdraft: 500 });
  await t.budget('workspace:u', 1000);
  await t.budget('workspace:z', 1000);
  await t.budget('workspace:f', 1000);
  await t.budget('workspace:t', 1000, { unit: 'TOKENS' });
  const rd = await t.reserveOk(800, { ws: 'd', overage_policy: 'ALLOW_WITH_OVERDRAFT' });
  expect((await t.commit(rd, 1200)).statusCode).toBe(200);
  const ru = await t.reserveOk(500, { ws: 'u' });
  expect((await t.commit(ru, 500)).statusCode).toBe(200);
  ok(await adm('POST', `/v1/admin/budgets/freeze?scope=${enc(t.scope('workspace:f'))}&unit=${USD}`));
  return t;
}

const scopesOf = (rows: any[]) => rows.map((l) => l.scope);

describe('budgets: list', () => {
  it('tenant key (budgets:read) lists its own ledgers, utilization desc by default; tenant_id is ignored', async () => {
    const t = await budgetFixture();
    const other = await createTenant(h);
    const k = await key(t.id, ['budgets:read']);
    const body = ok(await asKey(k.key_secret, 'GET', `/v1/admin/budgets${qs({ tenant_id: other.id })}`));
    expect(body.has_more).toBe(false);
    expect(body.next_cursor).toBeUndefined();
    const rows = body.ledgers as any[];
    expect(rows).toHaveLength(5);
    expect(rows.every((l) => l.tenant_id === t.id)).toBe(true);
    expect(rows[0].scope).toBe(t.scope('workspace:d'));
    expect(rows[1].scope).toBe(t.scope('workspace:u'));
    const d = rows[0];
    expect(d).toMatchObject({ unit: USD, allocated: amt(1000), spent: amt(1000), debt: amt(200), remaining: amt(-200), status: 'ACTIVE' });
    expect(typeof d.ledger_id).toBe('string');
    // A key without budgets:read (admin:write does not grant reads) → 403.
    const w = await key(t.id, ['admin:write']);
    expectError(await asKey(w.key_secret, 'GET', '/v1/admin/budgets'), 403, 'INSUFFICIENT_PERMISSIONS');
    expectError(await adm('GET', '/v1/admin/budgets', undefined, {}), 401, 'UNAUTHORIZED');
  });

  it('filters: status, unit, scope_prefix, has_debt, over_limit, utilization bounds, search', async () => {
    const t = await budgetFixture();
    const list = async (q: Record<string, string | number | boolean>) => scopesOf(await listAll('/v1/admin/budgets', 'ledgers', { tenant_id: t.id, ...q }));
    expect(await list({ status: 'FROZEN' })).toEqual([t.scope('workspace:f')]);
    expect(await list({ unit: 'TOKENS' })).toEqual([t.scope('workspace:t')]);
    expect(await list({ has_debt: true })).toEqual([t.scope('workspace:d')]);
    expect((await list({ has_debt: false })).sort()).toEqual(['f', 't', 'u', 'z'].map((w) => t.scope(`workspace:${w}`)));
    expect(await list({ over_limit: true })).toEqual([]);
    ok(await adm('PATCH', `/v1/admin/budgets?scope=${enc(t.scope('workspace:d'))}&unit=${USD}`, { overdraft_limit: amt(100) }));
    expect(await list({ over_limit: true })).toEqual([t.scope('workspace:d')]);
    expect(await list({ utilization_min: 0.5, utilization_max: 0.5 })).toEqual([t.scope('workspace:u')]);
    expect(await list({ utilization_min: 0.4 })).toEqual([t.scope('workspace:d'), t.scope('workspace:u')]);
    expect((await list({ utilization_max: 0 })).length).toBe(3);
    expect(await list({ scope_prefix: t.scope('workspace:u') })).toEqual([t.scope('workspace:u')]);
    expect(await list({ scope_prefix: t.scope('WORKSPACE:') , unit: 'TOKENS' })).toEqual([t.scope('workspace:t')]);
    expect(await list({ search: 'WORKSPACE:Z' })).toEqual([t.scope('workspace:z')]);
    expect(await list({ scope_prefix: 'tenant:someone-else/' })).toEqual([]);
  });

  it('utilization_min > utilization_max, or outside [0, 1] → 400; bad booleans, sort and cursor → 400', async () => {
    const t = await budgetFixture();
    const bad = [
      { utilization_min: 0.8, utilization_max: 0.2 }, { utilization_min: 1.5 }, { utilization_max: -0.1 },
      { has_debt: 'maybe' }, { over_limit: 'yes' }, { sort_by: 'allocated' }, { sort_dir: 'sideways' },
      { unit: 'EUR' }, { status: 'OPEN' }, { cursor: 'not-a-cursor' }, { search: 'y'.repeat(129) },
    ];
    for (const q of bad) expectError(await adm('GET', `/v1/admin/budgets${qs({ tenant_id: t.id, ...q })}`), 400, 'INVALID_REQUEST');
  });

  it('sort_by and cursor pagination: scope asc, debt desc, commit_overage_policy; cursors are bound to the filters', async () => {
    const t = await budgetFixture();
    const byScope = await listAll('/v1/admin/budgets', 'ledgers', { tenant_id: t.id, sort_by: 'scope', sort_dir: 'asc', limit: 2 });
    expect(scopesOf(byScope)).toEqual(['d', 'f', 't', 'u', 'z'].map((w) => t.scope(`workspace:${w}`)));
    const byDebt = await listAll('/v1/admin/budgets', 'ledgers', { tenant_id: t.id, sort_by: 'debt', limit: 1 });
    expect(byDebt).toHaveLength(5);
    expect(byDebt[0].scope).toBe(t.scope('workspace:d'));
    const byUtilAsc = await listAll('/v1/admin/budgets', 'ledgers', { tenant_id: t.id, sort_by: 'utilization', sort_dir: 'asc', limit: 2 });
    expect(scopesOf(byUtilAsc).slice(-2)).toEqual([t.scope('workspace:u'), t.scope('workspace:d')]);
    ok(await adm('GET', `/v1/admin/budgets${qs({ tenant_id: t.id, sort_by: 'commit_overage_policy' })}`));
    const p = ok(await adm('GET', `/v1/admin/budgets${qs({ tenant_id: t.id, limit: 1 })}`));
    expect(p.has_more).toBe(true);
    expectError(await adm('GET', `/v1/admin/budgets${qs({ tenant_id: t.id, limit: 1, cursor: p.next_cursor, unit: USD })}`), 400, 'INVALID_REQUEST');
  });

  it('admin key without tenant_id lists across tenants; every ledger carries its tenant_id', async () => {
    const tok = `lx${token()}`;
    const a = await budgetFixture(`${tok}-a`);
    const b = await namedTenant(`${tok}-b`);
    await b.budget('workspace:only', 50);
    const rows = await listAll('/v1/admin/budgets', 'ledgers', { search: tok, limit: 2, sort_by: 'tenant_id', sort_dir: 'asc' });
    expect(rows.map((l) => l.tenant_id)).toEqual([a.id, a.id, a.id, a.id, a.id, b.id]);
    const prefixed = await listAll('/v1/admin/budgets', 'ledgers', { scope_prefix: `${b.scope()}/` });
    expect(scopesOf(prefixed)).toEqual([b.scope('workspace:only')]);
  });

  it("a scope-filtered key may not name a scope_prefix outside its filter (403); rows are not filtered", async () => {
    const t = await budgetFixture();
    const k = await key(t.id, ['budgets:read', 'balances:read'], { scope_filter: ['workspace:u'] });
    expectError(await asKey(k.key_secret, 'GET', `/v1/admin/budgets${qs({ scope_prefix: t.scope('workspace:z') })}`), 403, 'FORBIDDEN');
    expectError(await asKey(k.key_secret, 'GET', `/v1/balances${qs({ scope_prefix: t.scope('workspace:z') })}`), 403, 'FORBIDDEN');
    const allowed = ok(await asKey(k.key_secret, 'GET', `/v1/admin/budgets${qs({ scope_prefix: t.scope('workspace:u') })}`));
    expect(scopesOf(allowed.ledgers)).toEqual([t.scope('workspace:u')]);
    expect(ok(await asKey(k.key_secret, 'GET', '/v1/admin/budgets')).ledgers).toHaveLength(5);
  });
});

describe('createBudget scope validation (AD-028)', () => {
  it('a tenant key creating a budget rooted in another tenant, or without a tenant root → 400, nothing created', async () => {
    const t = await createTenant(h, { budgets: [] });
    const other = await createTenant(h, { budgets: [] });
    const k = await key(t.id, ['budgets:read', 'budgets:write']);
    const create = (scope: string) => asKey(k.key_secret, 'POST', '/v1/admin/budgets', { scope, unit: USD, allocated: amt(1000) });
    expectError(await create('workspace:eng'), 400, 'INVALID_REQUEST');
    expectError(await create(`${other.scope()}/workspace:x`), 400, 'INVALID_REQUEST');
    expectError(await adm('GET', `/v1/admin/budgets/lookup?scope=${enc(`${other.scope()}/workspace:x`)}&unit=${USD}`), 404, 'BUDGET_NOT_FOUND');
    expect(ok(await adm('GET', `/v1/admin/budgets${qs({ tenant_id: other.id })}`)).ledgers).toEqual([]);
    ok(await create(t.scope('workspace:x')), 201);
  });
});

// ------------------------------------------------------------------ admin-plane balances

describe('admin-plane GET /v1/balances', () => {
  it('ACTIVE ledgers of the key tenant as BudgetLedger rows, in scope order with cursors; FROZEN left out', async () => {
    const t = await budgetFixture();
    const body = ok(await asKey(t.key, 'GET', '/v1/balances'));
    expect(body.has_more).toBe(false);
    expect(scopesOf(body.balances)).toEqual(['d', 't', 'u', 'z'].map((w) => t.scope(`workspace:${w}`)));
    expect(body.balances[0]).toMatchObject({ tenant_id: t.id, scope: t.scope('workspace:d'), debt: amt(200), status: 'ACTIVE' });
    expect(typeof body.balances[0].ledger_id).toBe('string');

    const pages: string[] = [];
    let cursor: string | undefined;
    for (let i = 0; i < 10; i += 1) {
      const p = ok(await asKey(t.key, 'GET', `/v1/balances${qs({ limit: 1, cursor })}`));
      pages.push(...scopesOf(p.balances));
      if (!p.has_more) break;
      cursor = p.next_cursor;
    }
    expect(pages).toEqual(scopesOf(body.balances));

    expect(scopesOf(ok(await asKey(t.key, 'GET', `/v1/balances${qs({ unit: 'TOKENS' })}`)).balances)).toEqual([t.scope('workspace:t')]);
    expect(scopesOf(ok(await asKey(t.key, 'GET', `/v1/balances${qs({ scope_prefix: t.scope('workspace:u') })}`)).balances)).toEqual([t.scope('workspace:u')]);
    // tenant_id is accepted and ignored.
    expect(ok(await asKey(t.key, 'GET', `/v1/balances${qs({ tenant_id: 'someone-else' })}`)).balances).toHaveLength(4);
  });

  it('limit outside [1, 100] → 400; no tenant key → 401 (the admin key is not accepted); missing balances:read → 403', async () => {
    const t = await budgetFixture();
    for (const limit of [0, 101, -1]) expectError(await asKey(t.key, 'GET', `/v1/balances?limit=${limit}`), 400, 'INVALID_REQUEST');
    expectError(await asKey(t.key, 'GET', '/v1/balances?cursor=garbage'), 400, 'INVALID_REQUEST');
    expectError(await adm('GET', '/v1/balances', undefined, {}), 401, 'UNAUTHORIZED');
    expectError(await adm('GET', '/v1/balances'), 401, 'UNAUTHORIZED');
    const k = await key(t.id, ['budgets:read']);
    expectError(await asKey(k.key_secret, 'GET', '/v1/balances'), 403, 'INSUFFICIENT_PERMISSIONS');
  });
});

// ------------------------------------------------------------------ API keys

describe('API keys: list', () => {
  it('without tenant_id lists keys of several tenants; never key_secret or key_hash; filters and sorting', async () => {
    const tok = `kx${token()}`;
    const a = await createTenant(h, { budgets: [] });
    const b = await createTenant(h, { budgets: [] });
    const ka = await key(a.id, ['balances:read'], { name: `${tok} alpha` });
    const kb = await key(b.id, ['balances:read'], { name: `${tok} bravo`, description: 'second', metadata: { team: 'x' } });
    const kc = await key(b.id, ['budgets:read'], { name: `${tok} charlie`, scope_filter: ['workspace:eng'] });
    const rows = await listAll('/v1/admin/api-keys', 'keys', { search: tok.toUpperCase(), limit: 1 });
    expect(rows.map((k) => k.key_id)).toEqual([kc.key_id, kb.key_id, ka.key_id]);
    for (const row of rows) {
      expect(row).not.toHaveProperty('key_secret');
      expect(row).not.toHaveProperty('key_hash');
      expect(row.key_prefix).toMatch(/^cyc_live_/);
    }
    expect(rows[0]).toMatchObject({ tenant_id: b.id, name: `${tok} charlie`, scope_filter: ['workspace:eng'], status: 'ACTIVE', permissions: ['budgets:read'] });
    expect(rows[1]).toMatchObject({ description: 'second', metadata: { team: 'x' } });

    const ofB = await listAll('/v1/admin/api-keys', 'keys', { tenant_id: b.id, search: tok, sort_by: 'name', sort_dir: 'asc' });
    expect(ofB.map((k) => k.key_id)).toEqual([kb.key_id, kc.key_id]);
    const byId = await listAll('/v1/admin/api-keys', 'keys', { search: kb.key_id });
    expect(byId.map((k) => k.key_id)).toEqual([kb.key_id]);

    ok(await adm('DELETE', `/v1/admin/api-keys/${kb.key_id}`));
    const revoked = await listAll('/v1/admin/api-keys', 'keys', { search: tok, status: 'REVOKED' });
    expect(revoked.map((k) => k.key_id)).toEqual([kb.key_id]);
    const active = await listAll('/v1/admin/api-keys', 'keys', { tenant_id: b.id, status: 'ACTIVE' });
    expect(active.every((k) => k.status === 'ACTIVE')).toBe(true);
    expect(active.map((k) => k.key_id)).toContain(kc.key_id);
    expect(active.map((k) => k.key_id)).not.toContain(kb.key_id);
  });

  it('bad parameters → 400; tenant key → 401 (admin only)', async () => {
    const t = await createTenant(h, { budgets: [] });
    for (const q of [{ sort_by: 'secret' }, { status: 'GONE' }, { cursor: 'zzz' }, { search: 'k'.repeat(129) }]) {
      expectError(await adm('GET', `/v1/admin/api-keys${qs(q)}`), 400, 'INVALID_REQUEST');
    }
    expectError(await adm('GET', '/v1/admin/api-keys', undefined, { 'x-cycles-api-key': t.key }), 401, 'UNAUTHORIZED');
  });
});

describe('API keys: PATCH /v1/admin/api-keys/{key_id}', () => {
  it('replaces permissions, scope_filter, name, description and metadata; the new permissions apply at once; one audit row', async () => {
    const t = await budgetFixture();
    const k = await key(t.id, ['balances:read']);
    expectError(await asKey(k.key_secret, 'GET', '/v1/admin/budgets'), 403, 'INSUFFICIENT_PERMISSIONS');
    const res = await adm('PATCH', `/v1/admin/api-keys/${k.key_id}`, {
      name: 'renamed', description: 'now reads budgets', permissions: ['budgets:read', 'budgets:read', 'balances:read'],
      scope_filter: ['workspace:u'], metadata: { owner: 'ops' },
    });
    const body = ok(res);
    expect(body).toMatchObject({
      key_id: k.key_id, tenant_id: t.id, name: 'renamed', description: 'now reads budgets', permissions: ['budgets:read', 'balances:read'],
      scope_filter: ['workspace:u'], metadata: { owner: 'ops' }, status: 'ACTIVE',
    });
    expect(body).not.toHaveProperty('key_hash');
    expect(body).not.toHaveProperty('key_secret');
    // The cached authentication of the key was dropped: the new permission works immediately.
    expect(ok(await asKey(k.key_secret, 'GET', '/v1/admin/budgets')).ledgers).toHaveLength(5);
    expectError(await asKey(k.key_secret, 'GET', `/v1/admin/budgets${qs({ scope_prefix: t.scope('workspace:z') })}`), 403, 'FORBIDDEN');
    const listed = await listAll('/v1/admin/api-keys', 'keys', { tenant_id: t.id, search: k.key_id });
    expect(listed[0]).toEqual(body);

    const audit = ok(await adm('GET', `/v1/admin/audit/logs${qs({ resource_id: k.key_id })}`));
    const rows = audit.logs as any[];
    const updates = rows.filter((r) => r.operation === 'updateApiKey' && r.status === 200);
    expect(updates).toHaveLength(1);
    expect(updates[0]).toMatchObject({ tenant_id: t.id, resource_type: 'api_key', request_id: res.headers['x-request-id'] });
  });

  it('immutable or unknown fields, unknown permissions → 400 and nothing changes', async () => {
    const t = await createTenant(h, { budgets: [] });
    const k = await key(t.id, ['balances:read']);
    const before = ok(await adm('GET', `/v1/admin/api-keys${qs({ tenant_id: t.id, search: k.key_id })}`)).keys[0];
    const later = new Date(Date.now() + 86_400_000).toISOString();
    for (const body of [{ expires_at: later }, { status: 'REVOKED' }, { tenant_id: 'x' }, { key_prefix: 'cyc_live_x' }, { permissions: ['nope'] }, { name: '' }, { name: '   ' }]) {
      expectError(await adm('PATCH', `/v1/admin/api-keys/${k.key_id}`, body), 400, 'INVALID_REQUEST');
    }
    expect(ok(await adm('GET', `/v1/admin/api-keys${qs({ tenant_id: t.id, search: k.key_id })}`)).keys[0]).toEqual(before);
  });

  it('REVOKED key → 409 INVALID_REQUEST; unknown key → 404 NOT_FOUND; CLOSED owner → 409 TENANT_CLOSED', async () => {
    const t = await createTenant(h, { budgets: [] });
    const k = await key(t.id, ['balances:read']);
    ok(await adm('DELETE', `/v1/admin/api-keys/${k.key_id}`));
    expectError(await adm('PATCH', `/v1/admin/api-keys/${k.key_id}`, { name: 'renamed' }), 409, 'INVALID_REQUEST');
    const stored = ok(await adm('GET', `/v1/admin/api-keys${qs({ tenant_id: t.id, search: k.key_id })}`)).keys[0];
    expect(stored).toMatchObject({ status: 'REVOKED', name: expect.not.stringMatching(/^renamed$/) });
    expectError(await adm('PATCH', `/v1/admin/api-keys/key_${token()}`, { name: 'x' }), 404, 'NOT_FOUND');

    const c = await createTenant(h, { budgets: [] });
    const kc = await key(c.id, ['balances:read']);
    ok(await adm('PATCH', `/v1/admin/tenants/${c.id}`, { status: 'CLOSED' }));
    expectError(await adm('PATCH', `/v1/admin/api-keys/${kc.key_id}`, { name: 'late' }), 409, 'TENANT_CLOSED');
    expect(ok(await adm('GET', `/v1/admin/api-keys${qs({ tenant_id: c.id, search: kc.key_id })}`)).keys[0].name).not.toBe('late');
    expectError(await adm('PATCH', `/v1/admin/api-keys/${kc.key_id}`, { name: 'late' }, {}), 401, 'UNAUTHORIZED');
  });
});

// ------------------------------------------------------------------ validation

describe('POST /v1/auth/validate', () => {
  const validate = (secret: string) => adm('POST', '/v1/auth/validate', { key_secret: secret });

  it('a valid key → valid:true with tenant_id, key_id, permissions, scope_filter, expires_at', async () => {
    const t = await createTenant(h, { budgets: [] });
    const k = await key(t.id, ['balances:read', 'budgets:read'], { scope_filter: ['workspace:eng'] });
    const body = ok(await validate(k.key_secret));
    expect(body).toMatchObject({ valid: true, tenant_id: t.id, key_id: k.key_id, scope_filter: ['workspace:eng'] });
    expect([...body.permissions].sort()).toEqual(['balances:read', 'budgets:read']);
    expect(Number.isNaN(Date.parse(body.expires_at))).toBe(false);
    expect(body).not.toHaveProperty('reason');
  });

  it('unknown, revoked, expired keys and suspended tenants → 200 valid:false with the reason', async () => {
    const unknown = ok(await validate(`cyc_live_${token()}${token()}`));
    expect(unknown).toEqual({ valid: false, tenant_id: '', reason: 'KEY_NOT_FOUND' });

    const t = await createTenant(h, { budgets: [] });
    const revoked = await key(t.id, ['balances:read']);
    ok(await adm('DELETE', `/v1/admin/api-keys/${revoked.key_id}`));
    expect(ok(await validate(revoked.key_secret))).toMatchObject({ valid: false, tenant_id: t.id, key_id: revoked.key_id, reason: 'KEY_REVOKED' });

    const expired = await key(t.id, ['balances:read'], { expires_at: new Date(Date.now() - 1000).toISOString() });
    expect(ok(await validate(expired.key_secret))).toMatchObject({ valid: false, reason: 'KEY_EXPIRED' });

    ok(await adm('PATCH', `/v1/admin/tenants/${t.id}`, { status: 'SUSPENDED' }));
    expect(ok(await validate(t.key))).toMatchObject({ valid: false, tenant_id: t.id, reason: 'TENANT_SUSPENDED' });
    ok(await adm('PATCH', `/v1/admin/tenants/${t.id}`, { status: 'ACTIVE' }));
    expect(ok(await validate(t.key)).valid).toBe(true);
  });

  it('missing or extra body fields → 400; no admin key → 401; a tenant key is not enough → 401', async () => {
    const t = await createTenant(h, { budgets: [] });
    expectError(await adm('POST', '/v1/auth/validate', {}), 400, 'INVALID_REQUEST');
    expectError(await adm('POST', '/v1/auth/validate', { key_secret: t.key, extra: 1 }), 400, 'INVALID_REQUEST');
    expectError(await adm('POST', '/v1/auth/validate', { key_secret: t.key }, {}), 401, 'UNAUTHORIZED');
    expectError(await adm('POST', '/v1/auth/validate', { key_secret: t.key }, { 'x-cycles-api-key': t.key }), 401, 'UNAUTHORIZED');
  });
});

describe('scope_filter matching (admin digest §4.3)', () => {
  it('an entry matches a whole segment, or every segment of its kind with kind:*; empty filter allows all', () => {
    expect(scopeFilterPermits([], 'tenant:a/workspace:x')).toBe(true);
    expect(scopeFilterPermits(['workspace:eng'], 'tenant:a/workspace:eng/app:b')).toBe(true);
    expect(scopeFilterPermits(['workspace:eng'], 'tenant:a/workspace:engineering')).toBe(false);
    expect(scopeFilterPermits(['workspace:*'], 'tenant:a/workspace:x')).toBe(true);
    expect(scopeFilterPermits(['workspace:*'], 'tenant:a/app:x')).toBe(false);
    expect(scopeFilterPermits(['*'], 'tenant:a/app:x')).toBe(false);
    expect(scopeFilterPermits(['app:y', 'Workspace:ENG'], 'tenant:a/workspace:eng')).toBe(true);
  });
});
