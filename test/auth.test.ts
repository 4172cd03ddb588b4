import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, USD, createTenant, idem, json, startHarness, type Harness, type TestTenant } from './helpers.js';

/**
 * Authentication and tenancy (runtime digest §1, §2.3, §5.1, §7, checklist §9 A and C; admin digest
 * §0.2, §2.4, §2.8, §4.2, §4.4).
 */

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => h.close());

const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const RUNTIME_PERMS = ['reservations:create', 'reservations:commit', 'reservations:release', 'reservations:extend', 'reservations:list', 'balances:read'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function expectError(res: LightMyRequestResponse, status: number, code: string, message?: string): any {
  expect(res.statusCode, res.body).toBe(status);
  const body = json(res);
  expect(body.error, res.body).toBe(code);
  expect(Object.keys(body).sort()).toEqual(['error', 'message', 'request_id', 'trace_id']);
  expect(body.request_id).toBe(res.headers['x-request-id']);
  expect(body.trace_id).toBe(res.headers['x-cycles-trace-id']);
  if (message !== undefined) expect(body.message).toBe(message);
  return body;
}

async function createKey(tenantId: string, extra: Record<string, unknown> = {}): Promise<{ key_id: string; key_secret: string }> {
  const res = await h.admin.inject({
    method: 'POST',
    url: '/v1/admin/api-keys',
    headers: ADMIN,
    payload: { tenant_id: tenantId, name: 'aux', permissions: RUNTIME_PERMS, ...extra },
  });
  expect(res.statusCode, res.body).toBe(201);
  return json(res);
}

function revoke(keyId: string, reason?: string) {
  return h.admin.inject({ method: 'DELETE', url: `/v1/admin/api-keys/${keyId}${reason ? `?reason=${encodeURIComponent(reason)}` : ''}`, headers: ADMIN });
}

function send(app: Harness['runtime'], method: 'GET' | 'POST', url: string, headers: Record<string, string>, payload?: unknown) {
  return app.inject({ method, url, headers, ...(payload === undefined ? {} : { payload: payload as object }) });
}

/** Every runtime route with a valid body, against reservation `rid` of tenant `t`. */
function runtimeRoutes(t: TestTenant, rid: string): Array<[string, 'GET' | 'POST', string, unknown]> {
  const subject = { tenant: t.id, workspace: 'prod' };
  const action = { kind: 'llm.completion', name: 'm' };
  return [
    ['createReservation', 'POST', '/v1/reservations', t.reserveBody(100)],
    ['commitReservation', 'POST', `/v1/reservations/${rid}/commit`, { idempotency_key: idem(), actual: { unit: USD, amount: 10 } }],
    ['releaseReservation', 'POST', `/v1/reservations/${rid}/release`, { idempotency_key: idem() }],
    ['extendReservation', 'POST', `/v1/reservations/${rid}/extend`, { idempotency_key: idem(), extend_by_ms: 1000 }],
    ['getReservation', 'GET', `/v1/reservations/${rid}`, undefined],
    ['listReservations', 'GET', `/v1/reservations?tenant=${t.id}`, undefined],
    ['decide', 'POST', '/v1/decide', { idempotency_key: idem(), subject, action, estimate: { unit: USD, amount: 10 } }],
    ['getBalances', 'GET', `/v1/balances?tenant=${t.id}`, undefined],
    ['createEvent', 'POST', '/v1/events', { idempotency_key: idem(), subject, action, actual: { unit: USD, amount: 10 } }],
  ];
}

async function reservationStatus(t: TestTenant, rid: string): Promise<string> {
  const res = await t.get(`/v1/reservations/${rid}`);
  expect(res.statusCode, res.body).toBe(200);
  return json(res).status;
}

/** Polls a request until it answers `status` or `deadlineMs` passes; returns the last response and elapsed ms. */
async function pollUntil(fn: () => Promise<LightMyRequestResponse>, status: number, deadlineMs: number) {
  const started = Date.now();
  let res = await fn();
  while (res.statusCode !== status && Date.now() - started < deadlineMs) {
    await sleep(25);
    res = await fn();
  }
  return { res, elapsed: Date.now() - started };
}

describe('missing / unknown / blank tenant keys', () => {
  it('no X-Cycles-API-Key on every runtime route → 401 UNAUTHORIZED, nothing changes', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(500);
    const before = await t.ledger();
    for (const [name, method, url, body] of runtimeRoutes(t, rid)) {
      const res = await send(h.runtime, method, url, {}, body);
      expect(res.statusCode, `${name}: ${res.body}`).toBe(401);
      expectError(res, 401, 'UNAUTHORIZED');
    }
    expect(await t.ledger()).toEqual(before);
    expect(await reservationStatus(t, rid)).toBe('ACTIVE');
  });

  it('an unknown key on every runtime route → 401 UNAUTHORIZED, nothing changes', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(500);
    const before = await t.ledger();
    for (const key of ['cyc_live_thisKeyDoesNotExist000000000000000', 'not-even-a-key', ' ']) {
      for (const [name, method, url, body] of runtimeRoutes(t, rid)) {
        const res = await send(h.runtime, method, url, { 'x-cycles-api-key': key }, body);
        expect(res.statusCode, `${name} with '${key}': ${res.body}`).toBe(401);
        expectError(res, 401, 'UNAUTHORIZED');
      }
    }
    expect(await t.ledger()).toEqual(before);
    expect(await reservationStatus(t, rid)).toBe('ACTIVE');
  });

  it('an invalid key is rejected before body validation (401, not 400)', async () => {
    const t = await createTenant(h);
    const before = await t.ledger();
    const res = await send(h.runtime, 'POST', '/v1/reservations', { 'x-cycles-api-key': 'cyc_live_nope' }, { bogus: true });
    expectError(res, 401, 'UNAUTHORIZED');
    expect(await t.ledger()).toEqual(before);
  });
});

describe('revoked keys', () => {
  it('DELETE /v1/admin/api-keys/{id} → 200 REVOKED; the key is then rejected with 401; a second revoke → 409', async () => {
    const t = await createTenant(h);
    const k = await createKey(t.id);
    const ok = await send(h.runtime, 'GET', `/v1/balances?tenant=${t.id}`, { 'x-cycles-api-key': k.key_secret });
    expect(ok.statusCode, ok.body).toBe(200);
    const rid = await t.reserveOk(100);

    const r = await revoke(k.key_id, 'rotated');
    expect(r.statusCode, r.body).toBe(200);
    const body = json(r);
    expect(body.key_id).toBe(k.key_id);
    expect(body.tenant_id).toBe(t.id);
    expect(body.status).toBe('REVOKED');
    expect(body.revoked_reason).toBe('rotated');
    expect(typeof body.revoked_at).toBe('string');
    expect(body).not.toHaveProperty('key_secret');
    expect(body).not.toHaveProperty('key_hash');

    const before = await t.ledger();
    const { res } = await pollUntil(() => send(h.runtime, 'POST', '/v1/reservations', { 'x-cycles-api-key': k.key_secret }, t.reserveBody(100)), 401, 2000);
    expectError(res, 401, 'UNAUTHORIZED');
    for (const [name, method, url, payload] of runtimeRoutes(t, rid)) {
      const x = await send(h.runtime, method, url, { 'x-cycles-api-key': k.key_secret }, payload);
      expect(x.statusCode, `${name}: ${x.body}`).toBe(401);
    }
    expect(await t.ledger()).toEqual(before);
    expect(await reservationStatus(t, rid)).toBe('ACTIVE');

    expectError(await revoke(k.key_id), 409, 'KEY_REVOKED');
    expectError(await revoke('key_doesnotexist'), 404, 'NOT_FOUND');
  });

  it('revocation reaches a second instance with a warm cache through pub/sub (within 2 s, cache TTL 60 s)', async () => {
    const h2 = await startHarness({ authCacheTtlMs: 60_000 });
    try {
      const t = await createTenant(h);
      const k = await createKey(t.id);
      const viaH2 = () => send(h2.runtime, 'GET', `/v1/balances?tenant=${t.id}`, { 'x-cycles-api-key': k.key_secret });
      // Warm h2's cache: a 60 s TTL means only an invalidation can make it notice the revocation.
      expect((await viaH2()).statusCode).toBe(200);
      expect((await viaH2()).statusCode).toBe(200);
      const r = await revoke(k.key_id);
      expect(r.statusCode, r.body).toBe(200);
      const { res, elapsed } = await pollUntil(viaH2, 401, 2000);
      expectError(res, 401, 'UNAUTHORIZED');
      expect(elapsed).toBeLessThan(2000);
      // And reserves through h2 are refused as well, with nothing held.
      const before = await t.ledger();
      const rr = await send(h2.runtime, 'POST', '/v1/reservations', { 'x-cycles-api-key': k.key_secret }, t.reserveBody(100));
      expectError(rr, 401, 'UNAUTHORIZED');
      expect(await t.ledger()).toEqual(before);
    } finally {
      await h2.close();
    }
  });

  it('reservations created with a key survive its revocation: another key of the tenant can still commit them', async () => {
    const t = await createTenant(h);
    const k = await createKey(t.id);
    const res = await send(h.runtime, 'POST', '/v1/reservations', { 'x-cycles-api-key': k.key_secret }, t.reserveBody(300));
    expect(res.statusCode, res.body).toBe(200);
    const rid = json(res).reservation_id;
    expect((await revoke(k.key_id)).statusCode).toBe(200);
    const c = await t.commit(rid, 200);
    expect(c.statusCode, c.body).toBe(200);
    expect(json(c).charged).toEqual({ unit: USD, amount: 200 });
  });
});

describe('expired keys', () => {
  it('a key created with expires_at in the past is rejected with 401', async () => {
    const t = await createTenant(h);
    const k = await createKey(t.id, { expires_at: '2020-01-01T00:00:00Z' });
    const before = await t.ledger();
    const rid = await t.reserveOk(100);
    const afterReserve = await t.ledger();
    for (const [name, method, url, payload] of runtimeRoutes(t, rid)) {
      const res = await send(h.runtime, method, url, { 'x-cycles-api-key': k.key_secret }, payload);
      expect(res.statusCode, `${name}: ${res.body}`).toBe(401);
      expectError(res, 401, 'UNAUTHORIZED');
    }
    expect(await t.ledger()).toEqual(afterReserve);
    expect(afterReserve).not.toEqual(before);
  });

  it('a key that expires while cached stops working at its expiry', async () => {
    const t = await createTenant(h);
    const h2 = await startHarness({ authCacheTtlMs: 60_000 });
    try {
      const expiresAt = Date.now() + 2000;
      const k = await createKey(t.id, { expires_at: new Date(expiresAt).toISOString() });
      const call = () => send(h2.runtime, 'GET', `/v1/balances?tenant=${t.id}`, { 'x-cycles-api-key': k.key_secret });
      expect((await call()).statusCode).toBe(200);
      await sleep(Math.max(0, expiresAt - Date.now()) + 100);
      expectError(await call(), 401, 'UNAUTHORIZED');
    } finally {
      await h2.close();
    }
  });
});

describe('permissions', () => {
  it('a key without the route permission → 403 naming the permission, nothing changes', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(100);
    const readOnly = await createKey(t.id, { permissions: ['balances:read'] });
    const listOnly = await createKey(t.id, { permissions: ['reservations:list'] });
    const before = await t.ledger();

    const cases: Array<[string, string, 'GET' | 'POST', string, unknown]> = [
      [readOnly.key_secret, 'reservations:create', 'POST', '/v1/reservations', t.reserveBody(10)],
      [readOnly.key_secret, 'reservations:commit', 'POST', `/v1/reservations/${rid}/commit`, { idempotency_key: idem(), actual: { unit: USD, amount: 1 } }],
      [readOnly.key_secret, 'reservations:release', 'POST', `/v1/reservations/${rid}/release`, { idempotency_key: idem() }],
      [readOnly.key_secret, 'reservations:extend', 'POST', `/v1/reservations/${rid}/extend`, { idempotency_key: idem(), extend_by_ms: 1000 }],
      [readOnly.key_secret, 'reservations:list', 'GET', `/v1/reservations`, undefined],
      [listOnly.key_secret, 'balances:read', 'GET', `/v1/balances?tenant=${t.id}`, undefined],
      [listOnly.key_secret, 'reservations:create', 'POST', '/v1/reservations', t.reserveBody(10)],
    ];
    for (const [key, perm, method, url, payload] of cases) {
      const res = await send(h.runtime, method, url, { 'x-cycles-api-key': key }, payload);
      expect(res.statusCode, `${perm}: ${res.body}`).toBe(403);
      const body = json(res);
      // Runtime digest §4.2 FORBIDDEN; §7.9 names the governance code INSUFFICIENT_PERMISSIONS.
      expect(['FORBIDDEN', 'INSUFFICIENT_PERMISSIONS']).toContain(body.error);
      expect(body.message).toContain(perm);
      expect(body.trace_id).toBe(res.headers['x-cycles-trace-id']);
    }
    expect(await t.ledger()).toEqual(before);
    expect(await reservationStatus(t, rid)).toBe('ACTIVE');

    // The list-only key can read its tenant's reservations.
    const ok = await send(h.runtime, 'GET', '/v1/reservations', { 'x-cycles-api-key': listOnly.key_secret });
    expect(ok.statusCode, ok.body).toBe(200);
    expect(json(ok).reservations.map((r: any) => r.reservation_id)).toEqual([rid]);
  });
});

describe('admin key on the runtime plane', () => {
  it('accepted on list (with tenant), get and release; the release is audited as admin_on_behalf_of', async () => {
    const a = await createTenant(h);
    const b = await createTenant(h);
    const ridA = await a.reserveOk(400);
    const ridB = await b.reserveOk(100);

    const list = await send(h.runtime, 'GET', `/v1/reservations?tenant=${a.id}`, ADMIN);
    expect(list.statusCode, list.body).toBe(200);
    expect(json(list).reservations.map((r: any) => r.reservation_id)).toEqual([ridA]);

    const get = await send(h.runtime, 'GET', `/v1/reservations/${ridB}`, ADMIN);
    expect(get.statusCode, get.body).toBe(200);
    expect(json(get).reservation_id).toBe(ridB);
    expect(json(get).subject.tenant).toBe(b.id);

    const before = await a.ledger();
    const rel = await send(h.runtime, 'POST', `/v1/reservations/${ridA}/release`, ADMIN, { idempotency_key: idem('adm'), reason: '[INCIDENT_FORCE_RELEASE] stuck' });
    expect(rel.statusCode, rel.body).toBe(200);
    expect(json(rel)).toEqual({ status: 'RELEASED', released: { unit: USD, amount: 400 } });
    const after = await a.ledger();
    for (const k of Object.keys(before)) {
      expect(after[k]!.reserved).toBe(before[k]!.reserved - 400);
      expect(after[k]!.remaining).toBe(before[k]!.remaining + 400);
    }
    expect(await reservationStatus(a, ridA)).toBe('RELEASED');

    const logs = await h.admin.inject({ method: 'GET', url: `/v1/admin/audit/logs?tenant_id=${a.id}&limit=100`, headers: ADMIN });
    expect(logs.statusCode, logs.body).toBe(200);
    const row = (json(logs).logs as any[]).find((e) => e.operation === 'releaseReservation' && e.resource_id === ridA);
    expect(row, logs.body).toBeDefined();
    expect(row.tenant_id).toBe(a.id);
    expect(row.status).toBe(200);
    expect(row.request_id).toBe(rel.headers['x-request-id']);
    expect(row.trace_id).toBe(rel.headers['x-cycles-trace-id']);
    expect(row.metadata.actor_type).toBe('admin_on_behalf_of');
    // Other tenants' audit rows are not mixed in.
    expect((json(logs).logs as any[]).every((e) => e.tenant_id === a.id)).toBe(true);
  });

  it('create, commit, extend, decide and events with only the admin key → 401, nothing changes', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(100);
    const before = await t.ledger();
    const routes = runtimeRoutes(t, rid).filter(([n]) => ['createReservation', 'commitReservation', 'extendReservation', 'decide', 'createEvent', 'getBalances'].includes(n));
    expect(routes).toHaveLength(6);
    for (const [name, method, url, payload] of routes) {
      const res = await send(h.runtime, method, url, ADMIN, payload);
      expect(res.statusCode, `${name}: ${res.body}`).toBe(401);
      expectError(res, 401, 'UNAUTHORIZED');
    }
    expect(await t.ledger()).toEqual(before);
    const got = json(await t.get(`/v1/reservations/${rid}`));
    expect(got.status).toBe('ACTIVE');
  });

  it('a wrong admin key → 401 on list, get and release', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(100);
    const before = await t.ledger();
    const bad = { 'x-admin-api-key': 'not-the-admin-key' };
    expectError(await send(h.runtime, 'GET', `/v1/reservations?tenant=${t.id}`, bad), 401, 'UNAUTHORIZED', 'Invalid admin API key');
    expectError(await send(h.runtime, 'GET', `/v1/reservations/${rid}`, bad), 401, 'UNAUTHORIZED', 'Invalid admin API key');
    expectError(await send(h.runtime, 'POST', `/v1/reservations/${rid}/release`, bad, { idempotency_key: idem() }), 401, 'UNAUTHORIZED', 'Invalid admin API key');
    // A prefix of the real key is not the key.
    expectError(await send(h.runtime, 'GET', `/v1/reservations/${rid}`, { 'x-admin-api-key': ADMIN_KEY.slice(0, -1) }), 401, 'UNAUTHORIZED');
    expect(await t.ledger()).toEqual(before);
    expect(await reservationStatus(t, rid)).toBe('ACTIVE');
  });

  it('admin list without tenant → 400 with the exact message', async () => {
    const t = await createTenant(h);
    await t.reserveOk(100);
    const res = await send(h.runtime, 'GET', '/v1/reservations', ADMIN);
    expectError(res, 400, 'INVALID_REQUEST', 'tenant query parameter is required when using admin key authentication');
    const blank = await send(h.runtime, 'GET', '/v1/reservations?tenant=', ADMIN);
    expectError(blank, 400, 'INVALID_REQUEST', 'tenant query parameter is required when using admin key authentication');
  });
});

describe('tenant isolation', () => {
  it("another tenant's reservation: get/commit/release/extend → 403 and it stays ACTIVE; unknown ids → 404", async () => {
    const a = await createTenant(h);
    const b = await createTenant(h);
    const ridA = await a.reserveOk(250);
    const beforeA = await a.ledger();
    const beforeB = await b.ledger();
    expectError(await b.get(`/v1/reservations/${ridA}`), 403, 'FORBIDDEN');
    expectError(await b.commit(ridA, 10), 403, 'FORBIDDEN');
    expectError(await b.release(ridA), 403, 'FORBIDDEN');
    expectError(await b.post(`/v1/reservations/${ridA}/extend`, { idempotency_key: idem(), extend_by_ms: 1000 }), 403, 'FORBIDDEN');
    expect(await a.ledger()).toEqual(beforeA);
    expect(await b.ledger()).toEqual(beforeB);
    expect(await reservationStatus(a, ridA)).toBe('ACTIVE');
    // Existence first: an id that never existed is 404 even when it names another tenant.
    const ghost = ridA.replace(/_[0-9A-Za-z]{12}$/, '_000000000000');
    expectError(await b.get(`/v1/reservations/${ghost}`), 404, 'NOT_FOUND');
    expectError(await b.commit(ghost, 10), 404, 'NOT_FOUND');
  });

  it("another tenant's balances and listing → 403; reserve/decide/events with another tenant's subject → 403, nothing changes", async () => {
    const a = await createTenant(h);
    const b = await createTenant(h);
    await a.reserveOk(10);
    const beforeA = await a.ledger();
    const beforeB = await b.ledger();
    expectError(await b.get(`/v1/balances?tenant=${a.id}`), 403, 'FORBIDDEN');
    expectError(await b.get(`/v1/reservations?tenant=${a.id}`), 403, 'FORBIDDEN');
    const subject = { tenant: a.id, workspace: 'prod' };
    const action = { kind: 'llm.completion', name: 'm' };
    expectError(await b.post('/v1/reservations', { ...b.reserveBody(100), subject }), 403, 'FORBIDDEN');
    expectError(await b.post('/v1/reservations', { ...b.reserveBody(100), subject, dry_run: true }), 403, 'FORBIDDEN');
    expectError(await b.post('/v1/decide', { idempotency_key: idem(), subject, action, estimate: { unit: USD, amount: 1 } }), 403, 'FORBIDDEN');
    expectError(await b.post('/v1/events', { idempotency_key: idem(), subject, action, actual: { unit: USD, amount: 1 } }), 403, 'FORBIDDEN');
    expect(await a.ledger()).toEqual(beforeA);
    expect(await b.ledger()).toEqual(beforeB);
    // Own listing shows only own rows.
    const own = await b.get('/v1/reservations');
    expect(json(own).reservations).toEqual([]);
  });

  it('idempotency keys are namespaced per tenant', async () => {
    const a = await createTenant(h);
    const b = await createTenant(h);
    const key = idem('shared');
    const ra = await a.post('/v1/reservations', a.reserveBody(100, { idempotency_key: key }));
    const rb = await b.post('/v1/reservations', b.reserveBody(100, { idempotency_key: key }));
    expect(ra.statusCode, ra.body).toBe(200);
    expect(rb.statusCode, rb.body).toBe(200);
    expect(json(ra).reservation_id).not.toBe(json(rb).reservation_id);
  });
});

describe('GET /v1/auth/introspect (admin digest §4.4)', () => {
  const introspect = (headers: Record<string, string>) => h.admin.inject({ method: 'GET', url: '/v1/auth/introspect', headers });
  const FLAGS = [
    'view_overview', 'view_budgets', 'view_events', 'view_webhooks', 'view_audit', 'view_tenants', 'view_api_keys', 'view_policies',
    'view_reservations', 'manage_budgets', 'manage_policies', 'manage_webhooks', 'manage_tenants', 'manage_api_keys', 'manage_reservations',
  ];

  it('admin key → admin shape with all capabilities true and no tenant_id / scope_filter', async () => {
    const res = await introspect(ADMIN);
    expect(res.statusCode, res.body).toBe(200);
    expect(json(res)).toEqual({
      authenticated: true,
      auth_type: 'admin',
      permissions: ['*'],
      capabilities: Object.fromEntries(FLAGS.map((f) => [f, true])),
    });
  });

  it('tenant key with the runtime permissions → tenant shape, capabilities derived normatively', async () => {
    const t = await createTenant(h);
    const res = await introspect({ 'x-cycles-api-key': t.key });
    expect(res.statusCode, res.body).toBe(200);
    const body = json(res);
    expect(body).toEqual({
      authenticated: true,
      auth_type: 'tenant',
      permissions: RUNTIME_PERMS,
      tenant_id: t.id,
      capabilities: {
        view_overview: false, view_budgets: false, view_events: false, view_webhooks: false, view_audit: false,
        view_tenants: false, view_api_keys: false, view_policies: false, view_reservations: true,
        manage_budgets: false, manage_policies: false, manage_webhooks: false, manage_tenants: false,
        manage_api_keys: false, manage_reservations: true,
      },
    });
  });

  it('admin:read + reservations:list with a scope_filter: read flags true, manage_reservations false, admin-only flags stay false', async () => {
    const t = await createTenant(h);
    const k = await createKey(t.id, { permissions: ['reservations:list', 'admin:read', 'admin:tenants:read', 'admin:apikeys:write'], scope_filter: ['workspace:prod'] });
    const res = await introspect({ 'x-cycles-api-key': k.key_secret });
    expect(res.statusCode, res.body).toBe(200);
    expect(json(res)).toEqual({
      authenticated: true,
      auth_type: 'tenant',
      permissions: ['reservations:list', 'admin:read', 'admin:tenants:read', 'admin:apikeys:write'],
      tenant_id: t.id,
      scope_filter: ['workspace:prod'],
      capabilities: {
        view_overview: false, view_budgets: true, view_events: true, view_webhooks: true, view_audit: false,
        view_tenants: false, view_api_keys: false, view_policies: true, view_reservations: true,
        manage_budgets: false, manage_policies: false, manage_webhooks: false, manage_tenants: false,
        manage_api_keys: false, manage_reservations: false,
      },
    });
  });

  it('admin:write and granular write permissions → manage flags; reservations:list alone → view only', async () => {
    const t = await createTenant(h);
    const w = await createKey(t.id, { permissions: ['admin:write', 'admin:webhooks:write'] });
    const cw = json(await introspect({ 'x-cycles-api-key': w.key_secret })).capabilities;
    expect(cw).toMatchObject({ manage_budgets: true, manage_policies: true, manage_webhooks: true, manage_reservations: true, view_budgets: false, view_reservations: false, manage_tenants: false, manage_api_keys: false });
    const l = await createKey(t.id, { permissions: ['reservations:list'] });
    const cl = json(await introspect({ 'x-cycles-api-key': l.key_secret })).capabilities;
    expect(cl).toMatchObject({ view_reservations: true, manage_reservations: false });
    for (const f of FLAGS) expect(typeof cl[f]).toBe('boolean');
  });

  it('no credentials → 401; an unknown or revoked tenant key → 403 on the governance plane; a wrong admin key → 401', async () => {
    expectError(await introspect({}), 401, 'UNAUTHORIZED');
    expectError(await introspect({ 'x-cycles-api-key': 'cyc_live_unknown00000000000000000000' }), 403, 'FORBIDDEN');
    const t = await createTenant(h);
    const k = await createKey(t.id);
    expect((await introspect({ 'x-cycles-api-key': k.key_secret })).statusCode).toBe(200);
    expect((await revoke(k.key_id)).statusCode).toBe(200);
    const { res } = await pollUntil(() => introspect({ 'x-cycles-api-key': k.key_secret }), 403, 2000);
    expectError(res, 403, 'FORBIDDEN');
    expectError(await introspect({ 'x-admin-api-key': 'wrong' }), 401, 'UNAUTHORIZED', 'Invalid admin API key');
  });
});
