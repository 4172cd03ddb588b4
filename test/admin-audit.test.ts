import { randomBytes } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, USD, createTenant, json, startHarness, type Harness, type TestTenant } from './helpers.js';
import { UNAUTH_RETENTION_MS, failureAuditEntry } from '../src/domain/audit.js';
import { inboundRequestId } from '../src/api/plugins/governance.js';

/**
 * Governance-plane plumbing: one audit row per failed request (admin digest §2.8, AD-108), the
 * audit-log filters (AD-109..111), the inbound X-Request-Id (§0.4, AD-009) and 405 for an
 * unsupported method (§0.3, AD-011). The runtime plane must be unaffected.
 */

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => h.close());

const ADMIN = { 'x-admin-api-key': ADMIN_KEY };

type Method = 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';

function adm(method: Method, url: string, headers: Record<string, string> = ADMIN, payload?: unknown) {
  return h.admin.inject({ method, url, headers, ...(payload === undefined ? {} : { payload: payload as object }) });
}

/** A unique, valid X-Request-Id, so a test can find exactly its own audit rows. */
function rid(label = 'req'): string {
  return `${label}-${randomBytes(8).toString('hex')}`;
}

function expectError(res: LightMyRequestResponse, status: number, code: string): any {
  expect(res.statusCode, res.body).toBe(status);
  const body = json(res);
  expect(body.error, res.body).toBe(code);
  expect(body.request_id).toBe(res.headers['x-request-id']);
  return body;
}

async function logs(query: string): Promise<any[]> {
  const res = await adm('GET', `/v1/admin/audit/logs?limit=100&${query}`);
  expect(res.statusCode, res.body).toBe(200);
  return json(res).logs;
}

/** Failure rows are written once the answer is out: poll briefly for them. */
async function rowsFor(requestId: string, query = '', atLeast = 1): Promise<any[]> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const rows = await logs(`request_id=${requestId}${query}`);
    if (rows.length >= atLeast || Date.now() > deadline) return rows;
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function keyWith(t: TestTenant, permissions: string[]): Promise<{ secret: string; keyId: string }> {
  const res = await adm('POST', '/v1/admin/api-keys', ADMIN, { tenant_id: t.id, name: 'audit test', permissions });
  expect(res.statusCode, res.body).toBe(201);
  return { secret: json(res).key_secret, keyId: json(res).key_id };
}

describe('failure audit rows (AD-108)', () => {
  it('no key → exactly one __unauth__ row: status 401, UNAUTHORIZED, operation METHOD:/path, correlation ids and metadata', async () => {
    const id = rid();
    const res = await adm('GET', '/v1/admin/tenants/some-tenant?x=1', { 'x-request-id': id, 'user-agent': 'audit-test/1' });
    const body = expectError(res, 401, 'UNAUTHORIZED');
    const rows = await rowsFor(id, '&tenant_id=__unauth__');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      tenant_id: '__unauth__',
      operation: 'GET:/v1/admin/tenants/some-tenant',
      status: 401,
      error_code: 'UNAUTHORIZED',
      request_id: id,
      trace_id: res.headers['x-cycles-trace-id'],
      user_agent: 'audit-test/1',
      metadata: { method: 'GET', path: '/v1/admin/tenants/some-tenant', error_message: body.message },
    });
    expect(rows[0].key_id).toBeUndefined();
    // The row is in the global index too, once.
    expect(await logs(`request_id=${id}`)).toHaveLength(1);
    // Pre-auth rows are kept for the shorter tier.
    const ttl = await h.system.redis.pttl(h.system.keys.auditEntry(rows[0].log_id));
    expect(ttl).toBeGreaterThan(UNAUTH_RETENTION_MS - 60_000);
    expect(ttl).toBeLessThanOrEqual(UNAUTH_RETENTION_MS);
  });

  it('a wrong admin key and an unknown route are pre-auth failures too', async () => {
    const a = rid();
    expectError(await adm('POST', '/v1/admin/tenants', { 'x-admin-api-key': 'wrong', 'x-request-id': a }, { tenant_id: 'x-y-z', name: 'x' }), 401, 'UNAUTHORIZED');
    const b = rid();
    expectError(await adm('GET', '/v1/admin/nowhere', { ...ADMIN, 'x-request-id': b }), 404, 'NOT_FOUND');
    const [ra] = await rowsFor(a, '&tenant_id=__unauth__');
    expect(ra).toMatchObject({ operation: 'POST:/v1/admin/tenants', status: 401, error_code: 'UNAUTHORIZED' });
    const [rb] = await rowsFor(b, '&tenant_id=__unauth__');
    expect(rb).toMatchObject({ operation: 'GET:/v1/admin/nowhere', status: 404, error_code: 'NOT_FOUND' });
  });

  it('admin-key failure → __admin__ row; tenant-key failures → the tenant\'s row with key_id (403 permissions, 400 validation)', async () => {
    const t = await createTenant(h, { budgets: [] });
    const a = rid();
    expectError(await adm('GET', '/v1/admin/tenants/no-such-tenant-z', { ...ADMIN, 'x-request-id': a }), 404, 'TENANT_NOT_FOUND');
    const [ra] = await rowsFor(a, '&tenant_id=__admin__');
    expect(ra).toMatchObject({ tenant_id: '__admin__', status: 404, error_code: 'TENANT_NOT_FOUND', operation: 'GET:/v1/admin/tenants/no-such-tenant-z' });

    const reader = await keyWith(t, ['budgets:read']);
    const b = rid();
    const body = { scope: t.scope(), unit: USD, allocated: { unit: USD, amount: 1 } };
    expectError(await adm('POST', '/v1/admin/budgets', { 'x-cycles-api-key': reader.secret, 'x-request-id': b }, body), 403, 'INSUFFICIENT_PERMISSIONS');
    const [rb] = await rowsFor(b, `&tenant_id=${t.id}`);
    expect(rb).toMatchObject({ tenant_id: t.id, key_id: reader.keyId, status: 403, error_code: 'INSUFFICIENT_PERMISSIONS', operation: 'POST:/v1/admin/budgets' });

    const writer = await keyWith(t, ['budgets:write']);
    const c = rid();
    expectError(await adm('POST', '/v1/admin/budgets', { 'x-cycles-api-key': writer.secret, 'x-request-id': c }, { ...body, bogus: 1 }), 400, 'INVALID_REQUEST');
    const [rc] = await rowsFor(c, `&tenant_id=${t.id}`);
    expect(rc).toMatchObject({ key_id: writer.keyId, status: 400, error_code: 'INVALID_REQUEST' });
    expect(rc.metadata.error_message).toContain('bogus');
  });

  it('a successful mutation writes its one success row and no failure row; a read writes nothing', async () => {
    const t = await createTenant(h, { budgets: [] });
    const a = rid();
    const res = await adm('POST', '/v1/admin/budgets', { ...ADMIN, 'x-request-id': a }, { tenant_id: t.id, scope: t.scope(), unit: USD, allocated: { unit: USD, amount: 5 } });
    expect(res.statusCode, res.body).toBe(201);
    const b = rid();
    expect((await adm('GET', `/v1/admin/tenants/${t.id}`, { ...ADMIN, 'x-request-id': b })).statusCode).toBe(200);
    // Give a stray failure row time to appear before asserting there is none.
    await new Promise((r) => setTimeout(r, 200));
    const rows = await logs(`request_id=${a}`);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ operation: 'createBudget', status: 201, tenant_id: t.id });
    expect(rows[0].error_code).toBeUndefined();
    expect(await logs(`request_id=${b}`)).toEqual([]);
  });

  it('the runtime plane writes no failure rows and generates its own request id', async () => {
    const id = rid();
    const res = await h.runtime.inject({ method: 'GET', url: '/v1/balances?tenant=x', headers: { 'x-request-id': id } });
    expect(res.statusCode).toBe(401);
    expect(res.headers['x-request-id']).not.toBe(id);
    const generated = String(res.headers['x-request-id']);
    await new Promise((r) => setTimeout(r, 200));
    expect(await logs(`request_id=${id}`)).toEqual([]);
    expect(await logs(`request_id=${generated}`)).toEqual([]);
  });

  it('failureAuditEntry strips CR/LF from the message and path and caps the message at 1024 characters', () => {
    const { entry, ttlMs } = failureAuditEntry({
      method: 'POST', url: '/v1/admin/x\r\ny?q=1', status: 500, errorCode: undefined, errorMessage: `a\r\nb${'c'.repeat(2000)}`,
      auth: { kind: 'admin' }, requestId: 'r', traceId: undefined, sourceIp: '127.0.0.1', userAgent: undefined,
    });
    expect(ttlMs).toBeUndefined();
    expect(entry).toMatchObject({ tenant_id: '__admin__', operation: 'POST:/v1/admin/x y', status: 500, error_code: 'INTERNAL_ERROR' });
    const message = (entry.metadata as { error_message: string }).error_message;
    expect(message).toHaveLength(1024);
    expect(message.startsWith('a b')).toBe(true);
    expect(message).not.toMatch(/[\r\n]/);
  });
});

describe('audit filters (AD-109, AD-110, AD-111)', () => {
  it.each([
    ['status=400&status_min=400'], ['status=400&status_max=500'], ['status_min=99'], ['status_max=600'], ['status_min=500&status_max=400'],
    [`operation=${Array.from({ length: 26 }, (_, i) => `op${i}`).join(',')}`],
    [`resource_type=${Array.from({ length: 26 }, (_, i) => `r${i}`).join(',')}`],
    [`error_code=${Array.from({ length: 26 }, (_, i) => `E${i}`).join(',')}`],
    [`error_code_exclude=${Array.from({ length: 26 }, (_, i) => `E${i}`).join(',')}`],
    [`search=${'s'.repeat(129)}`], ['from=yesterday'], ['from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z'], ['limit=0'],
  ])('%s → 400 INVALID_REQUEST', async (query) => {
    expectError(await adm('GET', `/v1/admin/audit/logs?${query}`), 400, 'INVALID_REQUEST');
  });

  it('25 values (or 26 that de-duplicate to 25) are accepted; a blank search is absent', async () => {
    const ops = Array.from({ length: 25 }, (_, i) => `op${i}`);
    expect((await adm('GET', `/v1/admin/audit/logs?operation=${ops.join(',')}`)).statusCode).toBe(200);
    expect((await adm('GET', `/v1/admin/audit/logs?operation=${[...ops, 'op0'].join(',')}`)).statusCode).toBe(200);
    expect((await adm('GET', '/v1/admin/audit/logs?search=%20%20&limit=1')).statusCode).toBe(200);
  });

  /**
   * A tenant with success rows (createBudget, fundBudget) and failure rows (400, 409) under one
   * key, a 403 under another; provisioning left createTenant and three createApiKey rows.
   */
  async function tenantWithHistory() {
    const t = await createTenant(h, { budgets: [] });
    const key = await keyWith(t, ['budgets:read', 'budgets:write']);
    const k = { 'x-cycles-api-key': key.secret };
    const scope = encodeURIComponent(t.scope());
    const ids = { create: rid('create'), fund: rid('fund'), dup: rid('dup'), invalid: rid('invalid'), denied: rid('denied') };
    const budget = { scope: t.scope(), unit: USD, allocated: { unit: USD, amount: 1000 } };
    expect((await adm('POST', '/v1/admin/budgets', { ...k, 'x-request-id': ids.create }, budget)).statusCode).toBe(201);
    expect((await adm('POST', `/v1/admin/budgets/fund?scope=${scope}&unit=${USD}`, { ...k, 'x-request-id': ids.fund }, { operation: 'CREDIT', amount: { unit: USD, amount: 10 } })).statusCode).toBe(200);
    expect((await adm('POST', '/v1/admin/budgets', { ...k, 'x-request-id': ids.dup }, budget)).statusCode).toBe(409);
    expect((await adm('POST', '/v1/admin/budgets', { ...k, 'x-request-id': ids.invalid }, { ...budget, x: 1 })).statusCode).toBe(400);
    const policyReader = await keyWith(t, ['budgets:read']);
    expect((await adm('POST', '/v1/admin/budgets', { 'x-cycles-api-key': policyReader.secret, 'x-request-id': ids.denied }, budget)).statusCode).toBe(403);
    await rowsFor(ids.denied);
    await rowsFor(ids.invalid);
    await rowsFor(ids.dup);
    return { t, key, ids };
  }

  it('operation=createBudget,fundBudget returns both kinds and nothing else (OR within, AND across)', async () => {
    const { t } = await tenantWithHistory();
    const rows = await logs(`tenant_id=${t.id}&operation=createBudget,fundBudget`);
    expect(rows.map((r) => r.operation).sort()).toEqual(['createBudget', 'fundBudget']);
    expect(rows.every((r) => r.tenant_id === t.id)).toBe(true);
    expect((await logs(`tenant_id=${t.id}&operation=createBudget,fundBudget&status=201`)).map((r) => r.operation)).toEqual(['createBudget']);
    expect((await logs(`tenant_id=${t.id}&operation=${encodeURIComponent('POST:/v1/admin/budgets')}`))).toHaveLength(3);
    expect((await logs(`tenant_id=${t.id}&resource_type=budget,tenant`)).map((r) => r.operation).sort()).toEqual(['createBudget', 'createTenant', 'fundBudget']);
  });

  it('error_code never returns success rows; error_code_exclude keeps them; status ranges are inclusive', async () => {
    const { t, key } = await tenantWithHistory();
    const codes = await logs(`tenant_id=${t.id}&error_code=DUPLICATE_RESOURCE,INVALID_REQUEST`);
    expect(codes.map((r) => r.error_code).sort()).toEqual(['DUPLICATE_RESOURCE', 'INVALID_REQUEST']);
    expect(await logs(`tenant_id=${t.id}&error_code=NO_SUCH_CODE`)).toEqual([]);
    const excluded = await logs(`tenant_id=${t.id}&key_id=${key.keyId}&error_code_exclude=INVALID_REQUEST,INSUFFICIENT_PERMISSIONS`);
    expect(excluded.map((r) => r.status).sort()).toEqual([200, 201, 409]);
    expect((await logs(`tenant_id=${t.id}&error_code=INVALID_REQUEST&error_code_exclude=INVALID_REQUEST`))).toEqual([]);
    expect((await logs(`tenant_id=${t.id}&status_min=400`)).map((r) => r.status).sort()).toEqual([400, 403, 409]);
    expect((await logs(`tenant_id=${t.id}&status_min=400&status_max=403`)).map((r) => r.status).sort()).toEqual([400, 403]);
    expect((await logs(`tenant_id=${t.id}&key_id=${key.keyId}&status_max=399`)).map((r) => r.status).sort()).toEqual([200, 201]);
    expect((await logs(`tenant_id=${t.id}&status_max=399`))).toHaveLength(6);
    expect((await logs(`tenant_id=${t.id}&status=409`)).map((r) => r.error_code)).toEqual(['DUPLICATE_RESOURCE']);
  });

  it('search (case-insensitive over resource_id, log_id, error_code, operation), key_id, request_id, trace_id, from/to', async () => {
    const { t, key, ids } = await tenantWithHistory();
    expect((await logs(`tenant_id=${t.id}&search=duplicate_res`)).map((r) => r.error_code)).toEqual(['DUPLICATE_RESOURCE']);
    expect((await logs(`tenant_id=${t.id}&search=FUNDbudget`)).map((r) => r.operation)).toEqual(['fundBudget']);
    expect(await logs(`tenant_id=${t.id}`)).toHaveLength(9);
    const all = await logs(`tenant_id=${t.id}&key_id=${key.keyId}`);
    expect(all).toHaveLength(4);
    const one = all[2];
    expect((await logs(`tenant_id=${t.id}&search=${one.log_id.toUpperCase()}`)).map((r) => r.log_id)).toEqual([one.log_id]);
    expect((await logs(`request_id=${ids.fund}`)).map((r) => r.operation)).toEqual(['fundBudget']);
    expect((await logs(`tenant_id=${t.id}&trace_id=${one.trace_id}`)).map((r) => r.log_id)).toEqual([one.log_id]);
    // Newest first; the window bounds are inclusive.
    const times = all.map((r) => Date.parse(r.timestamp));
    expect([...times].sort((a, b) => b - a)).toEqual(times);
    const from = new Date(times[times.length - 1]! + 1).toISOString();
    expect((await logs(`tenant_id=${t.id}&key_id=${key.keyId}&from=${from}`)).every((r) => Date.parse(r.timestamp) >= Date.parse(from))).toBe(true);
    expect(await logs(`tenant_id=${t.id}&key_id=${key.keyId}&from=${new Date(times[0]! + 1).toISOString()}`)).toEqual([]);
    expect(await logs(`tenant_id=${t.id}&to=${new Date(times[times.length - 1]! - 1).toISOString()}`)).not.toContainEqual(all[3]);
    const window = await logs(`tenant_id=${t.id}&key_id=${key.keyId}&from=${new Date(times[times.length - 1]!).toISOString()}&to=${new Date(times[0]!).toISOString()}`);
    expect(window).toHaveLength(4);
  });

  it('pages with a cursor under filters: no duplicates, then has_more false', async () => {
    const { t } = await tenantWithHistory();
    const seen: string[] = [];
    let cursor = '';
    for (let i = 0; i < 10; i += 1) {
      const res = await adm('GET', `/v1/admin/audit/logs?tenant_id=${t.id}&status_min=200&limit=2${cursor}`);
      const body = json(res);
      seen.push(...body.logs.map((r: any) => r.log_id));
      if (!body.has_more) break;
      cursor = `&cursor=${body.next_cursor}`;
    }
    expect(seen).toHaveLength(9);
    expect(new Set(seen).size).toBe(9);
  });
});

describe('inbound X-Request-Id (admin digest §0.4, AD-009)', () => {
  it('a valid inbound id is echoed in the header, the error body and the audit row; on success too', async () => {
    const id = rid('abc');
    const res = await adm('GET', '/v1/admin/tenants/no-such-tenant-q', { ...ADMIN, 'x-request-id': id });
    const body = expectError(res, 404, 'TENANT_NOT_FOUND');
    expect(res.headers['x-request-id']).toBe(id);
    expect(body.request_id).toBe(id);
    const ok = await adm('GET', '/v1/auth/introspect', { ...ADMIN, 'x-request-id': 'abc' });
    expect(ok.statusCode).toBe(200);
    expect(ok.headers['x-request-id']).toBe('abc');
    const unmatched = await adm('GET', '/v1/nowhere', { 'x-request-id': id });
    expect(unmatched.headers['x-request-id']).toBe(id);
  });

  it('an over-long or unsafe inbound id is replaced by a generated one (never rejected)', async () => {
    for (const bad of ['x'.repeat(129), 'a b', 'a"b', '<script>', '-leading-dash', 'ünï']) {
      const res = await adm('GET', '/v1/auth/introspect', { ...ADMIN, 'x-request-id': bad });
      expect(res.statusCode).toBe(200);
      expect(res.headers['x-request-id']).not.toBe(bad);
      expect(String(res.headers['x-request-id'])).toMatch(/^req_[0-9a-f]+$/);
    }
    expect(inboundRequestId('x'.repeat(128))).toBe('x'.repeat(128));
    expect(inboundRequestId('550e8400-e29b-41d4-a716-446655440000')).toBe('550e8400-e29b-41d4-a716-446655440000');
    expect(inboundRequestId(undefined)).toBeUndefined();
  });
});

describe('unsupported method → 405 with Allow (admin digest §0.3, AD-011)', () => {
  it('admin plane: PUT on a tenant → 405 INVALID_REQUEST, Allow lists the served methods; the failure is audited', async () => {
    const t = await createTenant(h, { budgets: [] });
    const id = rid();
    const res = await adm('PUT', `/v1/admin/tenants/${t.id}`, { ...ADMIN, 'x-request-id': id }, { name: 'x' });
    expectError(res, 405, 'INVALID_REQUEST');
    const allow = String(res.headers.allow).split(', ');
    expect(allow).toEqual(expect.arrayContaining(['GET', 'PATCH']));
    expect(allow).not.toContain('PUT');
    expect(json((await adm('GET', `/v1/admin/tenants/${t.id}`))).name).toBe(t.id);
    const [row] = await rowsFor(id);
    expect(row).toMatchObject({ status: 405, error_code: 'INVALID_REQUEST', operation: `PUT:/v1/admin/tenants/${t.id}` });
    expect(String((await adm('DELETE', '/v1/admin/policies', ADMIN)).headers.allow).split(', ')).toEqual(expect.arrayContaining(['GET', 'POST']));
  });

  it('runtime plane: GET on commit → 405 Allow POST; an unknown path stays 404 NOT_FOUND', async () => {
    const res = await h.runtime.inject({ method: 'GET', url: '/v1/reservations/rsv_x_0/commit' });
    expectError(res, 405, 'INVALID_REQUEST');
    expect(res.headers.allow).toBe('POST');
    expectError(await h.runtime.inject({ method: 'GET', url: '/v1/nope' }), 404, 'NOT_FOUND');
    expectError(await h.runtime.inject({ method: 'POST', url: '/v1/reservations/x/y/z' }), 404, 'NOT_FOUND');
  });
});
