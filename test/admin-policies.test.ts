import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, createTenant, json, startHarness, type Harness, type TestTenant } from './helpers.js';
import { parseScopePattern, scopeFilterPermits, tenantOfPolicyId } from '../src/domain/policies.js';

/**
 * Policies (admin digest §2.3, checklist §9 items 60–64): create, list and update with a tenant
 * key or the admin key, the scope-pattern grammar, tenant status guards, events and audit rows.
 */

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => h.close());

const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const POLICY_PERMISSIONS = ['policies:read', 'policies:write'];

function adm(method: 'GET' | 'POST' | 'PATCH', url: string, payload?: unknown, headers: Record<string, string> = ADMIN) {
  return h.admin.inject({ method, url, headers, ...(payload === undefined ? {} : { payload: payload as object }) });
}

const withKey = (key: string) => ({ 'x-cycles-api-key': key });

function expectError(res: LightMyRequestResponse, status: number, code: string, message?: string): any {
  expect(res.statusCode, res.body).toBe(status);
  const body = json(res);
  expect(body.error, res.body).toBe(code);
  expect(body.request_id).toBe(res.headers['x-request-id']);
  expect(body.trace_id).toBe(res.headers['x-cycles-trace-id']);
  if (message !== undefined) expect(body.message).toBe(message);
  return body;
}

async function keyWith(t: TestTenant, permissions: string[], extra: Record<string, unknown> = {}): Promise<string> {
  const res = await adm('POST', '/v1/admin/api-keys', { tenant_id: t.id, name: 'policy test', permissions, ...extra });
  expect(res.statusCode, res.body).toBe(201);
  return json(res).key_secret as string;
}

async function tenantWithKey(): Promise<{ t: TestTenant; key: string }> {
  const t = await createTenant(h, { budgets: [] });
  return { t, key: await keyWith(t, POLICY_PERMISSIONS) };
}

function create(body: Record<string, unknown>, key?: string) {
  return adm('POST', '/v1/admin/policies', body, key ? withKey(key) : ADMIN);
}

async function createOk(t: TestTenant, key: string, body: Record<string, unknown> = {}): Promise<any> {
  const res = await create({ name: `p-${Math.random().toString(16).slice(2, 10)}`, scope_pattern: `${t.scope()}/*`, ...body }, key);
  expect(res.statusCode, res.body).toBe(201);
  return json(res);
}

function patch(id: string, body: Record<string, unknown>, key?: string) {
  return adm('PATCH', `/v1/admin/policies/${encodeURIComponent(id)}`, body, key ? withKey(key) : ADMIN);
}

async function listAll(t: TestTenant, query = ''): Promise<any[]> {
  const res = await adm('GET', `/v1/admin/policies?tenant_id=${t.id}&limit=100${query}`);
  expect(res.statusCode, res.body).toBe(200);
  return json(res).policies;
}

/** Events the tenant's outbox holds, parsed. */
async function outboxEvents(t: TestTenant): Promise<any[]> {
  const entries = await h.system.redis.xrange(h.system.keys.outbox(t.id), '-', '+');
  return entries.map(([, fields]) => JSON.parse(fields[1]!));
}

async function auditRows(query: string): Promise<any[]> {
  const res = await adm('GET', `/v1/admin/audit/logs?limit=100&${query}`);
  expect(res.statusCode, res.body).toBe(200);
  return json(res).logs;
}

describe('policies: scope pattern grammar (unit)', () => {
  it('accepts the budget grammar with a wildcard final segment, lower-cased, rooted in a tenant', () => {
    expect(parseScopePattern('tenant:acme')).toEqual({ pattern: 'tenant:acme', tenant: 'acme' });
    expect(parseScopePattern('tenant:acme/*')).toEqual({ pattern: 'tenant:acme/*', tenant: 'acme' });
    expect(parseScopePattern('tenant:acme/agent:*')).toEqual({ pattern: 'tenant:acme/agent:*', tenant: 'acme' });
    expect(parseScopePattern('tenant:acme/workspace:ENG/agent:*')).toEqual({ pattern: 'tenant:acme/workspace:eng/agent:*', tenant: 'acme' });
    expect(parseScopePattern('tenant:acme/workspace:eng/app:a')).toEqual({ pattern: 'tenant:acme/workspace:eng/app:a', tenant: 'acme' });
  });

  it.each([
    ['agent:*'], ['*/agent:summarizer'], ['*'], ['tenant:*'], ['tenant:acme/*/agent:x'], ['tenant:acme/agent:*/toolset:x'],
    ['tenant:acme/workspace:a/workspace:*'], ['tenant:acme/agent:x/workspace:*'], ['tenant:acme/bogus:*'], ['tenant:acme/workspace:e*g'],
    ['tenant:acme/'], ['workspace:eng/*'], ['tenant:acme/**'],
  ])('rejects %s', (pattern) => {
    expect('error' in parseScopePattern(pattern)).toBe(true);
  });

  it('policy ids carry their tenant; anything else names no tenant', () => {
    expect(tenantOfPolicyId('pol_acme-1_0123456789abcdef')).toBe('acme-1');
    for (const id of ['pol_missing-abcd', 'pol__0123456789abcdef', 'pol_Acme_0123456789abcdef', 'rsv_acme_0123456789abcdef', 'pol_acme_0123']) {
      expect(tenantOfPolicyId(id)).toBeUndefined();
    }
  });

  it('scope_filter: exact segment or kind:* on some segment; empty allows all', () => {
    expect(scopeFilterPermits([], 'tenant:a/*')).toBe(true);
    expect(scopeFilterPermits(['workspace:eng'], 'tenant:a/workspace:eng/*')).toBe(true);
    expect(scopeFilterPermits(['workspace:*'], 'tenant:a/workspace:eng/agent:*')).toBe(true);
    expect(scopeFilterPermits(['workspace:eng'], 'tenant:a/*')).toBe(false);
    expect(scopeFilterPermits(['*'], 'tenant:a/*')).toBe(false);
  });
});

describe('policies: create', () => {
  it('tenant key {name, scope_pattern tenant:t/*} → 201 ACTIVE, priority 0, no tenant_id; one policy.created event; one audit row', async () => {
    const { t, key } = await tenantWithKey();
    const res = await create({ name: 'default', scope_pattern: `${t.scope()}/*` }, key);
    expect(res.statusCode, res.body).toBe(201);
    const p = json(res);
    expect(p.policy_id).toMatch(new RegExp(`^pol_${t.id}_[0-9a-f]{16}$`));
    expect(p).toMatchObject({ name: 'default', scope_pattern: `${t.scope()}/*`, status: 'ACTIVE', priority: 0 });
    expect(p.tenant_id).toBeUndefined();
    expect(Number.isNaN(Date.parse(p.created_at))).toBe(false);
    // Stored in the tenant's slot.
    expect(await h.system.redis.exists(h.system.keys.policy(t.id, p.policy_id))).toBe(1);
    expect(h.system.keys.policy(t.id, p.policy_id).startsWith(h.system.keys.tenantPrefix(t.id))).toBe(true);

    const events = (await outboxEvents(t)).filter((e) => e.event_type.startsWith('policy.'));
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      event_type: 'policy.created', category: 'policy', tenant_id: t.id, scope: `${t.scope()}/*`, source: 'cycles-admin',
      data: { policy_id: p.policy_id, name: 'default', scope_pattern: `${t.scope()}/*` },
      request_id: res.headers['x-request-id'], trace_id: res.headers['x-cycles-trace-id'],
    });
    expect(events[0].actor.type).toBe('api_key');

    const rows = await auditRows(`tenant_id=${t.id}&operation=createPolicy`);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ operation: 'createPolicy', resource_type: 'policy', resource_id: p.policy_id, status: 201, request_id: res.headers['x-request-id'] });
    expect(rows[0].error_code).toBeUndefined();
  });

  it('every setting round-trips; effective dates are normalised to ISO-8601', async () => {
    const { t, key } = await tenantWithKey();
    const body = {
      name: 'full',
      description: 'all fields',
      scope_pattern: `${t.scope()}/workspace:Eng/agent:*`,
      priority: 10,
      caps: { max_tokens: 4096, max_steps_remaining: 10, tool_allowlist: ['search'], tool_denylist: ['rm'], cooldown_ms: 0 },
      commit_overage_policy: 'REJECT',
      reservation_ttl_override: { default_ttl_ms: 1000, max_ttl_ms: 86_400_000, max_extensions: 0 },
      rate_limits: { max_reservations_per_minute: 1, max_commits_per_minute: 5 },
      effective_from: '2026-01-01T00:00:00Z',
      effective_until: '2026-12-31T23:59:59+01:00',
    };
    const p = await createOk(t, key, body);
    const { name, description, priority, caps, commit_overage_policy, reservation_ttl_override, rate_limits } = body;
    expect(p).toMatchObject({ name, description, priority, caps, commit_overage_policy, reservation_ttl_override, rate_limits });
    expect(p.scope_pattern).toBe(`${t.scope()}/workspace:eng/agent:*`);
    expect(p.effective_from).toBe('2026-01-01T00:00:00.000Z');
    expect(p.effective_until).toBe('2026-12-31T22:59:59.000Z');
    expect((await listAll(t))[0]).toEqual(p);
  });

  it('admin key: tenant_id required (400) and then accepted; a tenant key sending tenant_id → 400; nothing is created on refusal', async () => {
    const { t, key } = await tenantWithKey();
    expectError(await create({ name: 'a', scope_pattern: `${t.scope()}/*` }), 400, 'INVALID_REQUEST', 'tenant_id is required when using admin key authentication');
    expectError(await create({ tenant_id: t.id, name: 'a', scope_pattern: `${t.scope()}/*` }, key), 400, 'INVALID_REQUEST');
    expect(await listAll(t)).toEqual([]);
    const res = await create({ tenant_id: t.id, name: 'a', scope_pattern: `${t.scope()}/*` });
    expect(res.statusCode, res.body).toBe(201);
    const rows = await auditRows(`tenant_id=${t.id}&operation=createPolicy`);
    expect(rows).toHaveLength(1);
    expect(rows[0].metadata.actor_type).toBe('admin_on_behalf_of');
  });

  it.each([
    ['agent:*'], ['*/agent:summarizer'], ['TENANT_OTHER'], ['{t}/*/agent:x'], ['{t}/agent:*/toolset:x'], ['{t}/bogus:*'], [''],
  ])('scope_pattern %s → 400, nothing created', async (raw) => {
    const { t, key } = await tenantWithKey();
    const other = await createTenant(h, { budgets: [] });
    const pattern = raw.replace('{t}', t.scope()).replace('TENANT_OTHER', `${other.scope()}/*`);
    expectError(await create({ name: 'x', scope_pattern: pattern }, key), 400, 'INVALID_REQUEST');
    expect(await listAll(t)).toEqual([]);
  });

  it('priority −1 → 400; blank name → 400; unknown property → 400; out-of-range TTL override → 400', async () => {
    const { t, key } = await tenantWithKey();
    const base = { name: 'x', scope_pattern: `${t.scope()}/*` };
    for (const body of [
      { ...base, priority: -1 },
      { ...base, name: '   ' },
      { ...base, status: 'DISABLED' },
      { ...base, bogus: 1 },
      { ...base, reservation_ttl_override: { default_ttl_ms: 999 } },
      { ...base, rate_limits: { max_commits_per_minute: 0 } },
      { ...base, caps: { max_tokens: -1 } },
      { ...base, caps: { extra: 1 } },
      { ...base, effective_from: 'tomorrow' },
      { ...base, commit_overage_policy: 'SOMETIMES' },
    ]) {
      expectError(await create(body, key), 400, 'INVALID_REQUEST');
    }
    expect(await listAll(t)).toEqual([]);
    expect((await outboxEvents(t)).filter((e) => e.event_type.startsWith('policy.'))).toEqual([]);
  });

  it('tenant missing → 404 TENANT_NOT_FOUND; SUSPENDED → 400; CLOSED → 409 TENANT_CLOSED (admin key), nothing stored', async () => {
    expectError(await create({ tenant_id: 'no-such-tenant-x', name: 'x', scope_pattern: 'tenant:no-such-tenant-x/*' }), 404, 'TENANT_NOT_FOUND');
    const t = await createTenant(h, { budgets: [] });
    expect((await adm('PATCH', `/v1/admin/tenants/${t.id}`, { status: 'SUSPENDED' })).statusCode).toBe(200);
    expectError(await create({ tenant_id: t.id, name: 'x', scope_pattern: `${t.scope()}/*` }), 400, 'INVALID_REQUEST');
    expect((await adm('PATCH', `/v1/admin/tenants/${t.id}`, { status: 'CLOSED' })).statusCode).toBe(200);
    expectError(await create({ tenant_id: t.id, name: 'x', scope_pattern: `${t.scope()}/*` }), 409, 'TENANT_CLOSED');
    expect(await listAll(t)).toEqual([]);
  });

  it('the same name twice in one tenant → 409 DUPLICATE_RESOURCE; the same name in another tenant is fine', async () => {
    const { t, key } = await tenantWithKey();
    await createOk(t, key, { name: 'dup' });
    expectError(await create({ name: 'dup', scope_pattern: `${t.scope()}/agent:*` }, key), 409, 'DUPLICATE_RESOURCE');
    expect(await listAll(t)).toHaveLength(1);
    const o = await tenantWithKey();
    await createOk(o.t, o.key, { name: 'dup' });
  });

  it('permissions: admin:read lists but cannot create (403 INSUFFICIENT_PERMISSIONS); admin:write creates; no policies:read → list 403', async () => {
    const t = await createTenant(h, { budgets: [] });
    const reader = await keyWith(t, ['admin:read']);
    expect((await adm('GET', '/v1/admin/policies', undefined, withKey(reader))).statusCode).toBe(200);
    expectError(await create({ name: 'x', scope_pattern: `${t.scope()}/*` }, reader), 403, 'INSUFFICIENT_PERMISSIONS');
    const writer = await keyWith(t, ['admin:write']);
    await createOk(t, writer);
    expectError(await adm('GET', '/v1/admin/policies', undefined, withKey(writer)), 403, 'INSUFFICIENT_PERMISSIONS');
    expectError(await adm('POST', '/v1/admin/policies', { name: 'x', scope_pattern: `${t.scope()}/*` }, {}), 401, 'UNAUTHORIZED');
    expect(await listAll(t)).toHaveLength(1);
  });

  it('a key scope_filter must permit the pattern (403 FORBIDDEN otherwise)', async () => {
    const t = await createTenant(h, { budgets: [] });
    const key = await keyWith(t, POLICY_PERMISSIONS, { scope_filter: ['workspace:eng'] });
    expectError(await create({ name: 'x', scope_pattern: `${t.scope()}/*` }, key), 403, 'FORBIDDEN');
    await createOk(t, key, { scope_pattern: `${t.scope()}/workspace:eng/*` });
  });
});

describe('policies: list', () => {
  it('admin key without tenant_id → 400 with the documented message', async () => {
    expectError(await adm('GET', '/v1/admin/policies'), 400, 'INVALID_REQUEST', 'tenant_id query parameter is required when using admin key authentication');
  });

  it('tenant key lists its own policies only, ignoring tenant_id; filters scope_pattern (exact) and status', async () => {
    const { t, key } = await tenantWithKey();
    const o = await tenantWithKey();
    const a = await createOk(t, key, { scope_pattern: `${t.scope()}/*` });
    const b = await createOk(t, key, { scope_pattern: `${t.scope()}/agent:*` });
    await createOk(o.t, o.key);
    expect((await patch(b.policy_id, { status: 'DISABLED' }, key)).statusCode).toBe(200);

    const mine = await adm('GET', `/v1/admin/policies?tenant_id=${o.t.id}`, undefined, withKey(key));
    expect(json(mine).policies.map((p: any) => p.policy_id).sort()).toEqual([a.policy_id, b.policy_id].sort());
    expect(json(mine).has_more).toBe(false);

    expect((await listAll(t, `&scope_pattern=${encodeURIComponent(`${t.scope()}/agent:*`)}`)).map((p) => p.policy_id)).toEqual([b.policy_id]);
    expect((await listAll(t, '&status=ACTIVE')).map((p) => p.policy_id)).toEqual([a.policy_id]);
    expect((await listAll(t, '&status=DISABLED')).map((p) => p.policy_id)).toEqual([b.policy_id]);
    expectError(await adm('GET', `/v1/admin/policies?tenant_id=${t.id}&status=PAUSED`), 400, 'INVALID_REQUEST');
    // v0.1.26 parameters are ignored.
    expect(await listAll(t, '&has_action_quotas=true&references_action_kind=x')).toHaveLength(2);
    // An unknown tenant, or an id no tenant can have, simply has no policies.
    expect(json(await adm('GET', '/v1/admin/policies?tenant_id=no-such-tenant-y')).policies).toEqual([]);
    expect(json(await adm('GET', '/v1/admin/policies?tenant_id=A%7Db')).policies).toEqual([]);
    const ignored = await adm('GET', '/v1/admin/policies?tenant_id=Not%20Valid', undefined, withKey(key));
    expect(json(ignored).policies).toHaveLength(2);
  });

  it('pages in ascending id order with a cursor: no duplicates, no gaps, has_more false at the end; a foreign cursor → 400', async () => {
    const { t, key } = await tenantWithKey();
    const ids: string[] = [];
    for (let i = 0; i < 5; i += 1) ids.push((await createOk(t, key)).policy_id);
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < 10; page += 1) {
      const res = await adm('GET', `/v1/admin/policies?tenant_id=${t.id}&limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      const body = json(res);
      seen.push(...body.policies.map((p: any) => p.policy_id));
      if (!body.has_more) {
        expect(body.next_cursor).toBeUndefined();
        break;
      }
      cursor = body.next_cursor;
    }
    expect(seen).toEqual([...ids].sort());
    expectError(await adm('GET', `/v1/admin/policies?tenant_id=${t.id}&cursor=bogus`), 400, 'INVALID_REQUEST');
    const o = await tenantWithKey();
    const first = json(await adm('GET', `/v1/admin/policies?tenant_id=${t.id}&limit=1`));
    expectError(await adm('GET', `/v1/admin/policies?tenant_id=${o.t.id}&cursor=${first.next_cursor}`), 400, 'INVALID_REQUEST');
    expectError(await adm('GET', `/v1/admin/policies?tenant_id=${t.id}&limit=0`), 400, 'INVALID_REQUEST');
    expectError(await adm('GET', `/v1/admin/policies?tenant_id=${t.id}&limit=101`), 400, 'INVALID_REQUEST');
  });
});

describe('policies: update', () => {
  it('unknown id → 404 NOT_FOUND; another tenant\'s key → 403 FORBIDDEN; the policy is unchanged', async () => {
    const { t, key } = await tenantWithKey();
    const o = await tenantWithKey();
    expectError(await patch('pol_missing-abcd', { description: 'x' }, key), 404, 'NOT_FOUND');
    expectError(await patch(`pol_${t.id}_0123456789abcdef`, { description: 'x' }, key), 404, 'NOT_FOUND');
    expectError(await patch(`pol_${t.id}_0123456789abcdef`, { description: 'x' }), 404, 'NOT_FOUND');
    const p = await createOk(t, key, { description: 'mine' });
    expectError(await patch(p.policy_id, { description: 'hijack' }, o.key), 403, 'FORBIDDEN', 'Policy does not belong to tenant');
    expect((await listAll(t))[0]).toEqual(p);
  });

  it('{status:"DISABLED"} → 200; scope_pattern → 400 (immutable); priority −1 → 400; fields replace wholesale; policy.updated names changed fields', async () => {
    const { t, key } = await tenantWithKey();
    const p = await createOk(t, key, { caps: { max_tokens: 10, cooldown_ms: 5 }, priority: 3 });
    const res = await patch(p.policy_id, { status: 'DISABLED' }, key);
    expect(res.statusCode, res.body).toBe(200);
    expect(json(res).status).toBe('DISABLED');
    expectError(await patch(p.policy_id, { scope_pattern: `${t.scope()}/agent:*` }, key), 400, 'INVALID_REQUEST', 'scope_pattern is immutable and cannot be updated');
    expectError(await patch(p.policy_id, { priority: -1 }, key), 400, 'INVALID_REQUEST');
    expectError(await patch(p.policy_id, { tenant_id: t.id }, key), 400, 'INVALID_REQUEST');
    expectError(await patch(p.policy_id, { status: 'PAUSED' }, key), 400, 'INVALID_REQUEST');

    const upd = await patch(p.policy_id, { caps: { max_steps_remaining: 2 }, priority: 7, name: 'renamed' }, key);
    expect(upd.statusCode, upd.body).toBe(200);
    const after = json(upd);
    expect(after).toMatchObject({ policy_id: p.policy_id, name: 'renamed', priority: 7, caps: { max_steps_remaining: 2 }, status: 'DISABLED', scope_pattern: p.scope_pattern });
    expect(after.caps.max_tokens).toBeUndefined();
    expect(after.created_at).toBe(p.created_at);
    expect(after.tenant_id).toBeUndefined();
    expect((await listAll(t))[0]).toEqual(after);

    const updates = (await outboxEvents(t)).filter((e) => e.event_type === 'policy.updated');
    expect(updates).toHaveLength(2);
    expect(updates[0].data).toEqual({ policy_id: p.policy_id, name: p.name, scope_pattern: p.scope_pattern, changed_fields: ['status'] });
    expect(updates[1].data.changed_fields.sort()).toEqual(['caps', 'name', 'priority']);
    expect(updates[1].data.name).toBe('renamed');
    expect(updates[1].request_id).toBe(upd.headers['x-request-id']);
    const rows = await auditRows(`tenant_id=${t.id}&operation=updatePolicy`);
    expect(rows).toHaveLength(2);
  });

  it('a rename onto another policy\'s name → 409 DUPLICATE_RESOURCE; the old name is freed by a rename', async () => {
    const { t, key } = await tenantWithKey();
    const a = await createOk(t, key, { name: 'alpha' });
    const b = await createOk(t, key, { name: 'beta' });
    expectError(await patch(b.policy_id, { name: 'alpha' }, key), 409, 'DUPLICATE_RESOURCE');
    expect((await patch(a.policy_id, { name: 'alpha' }, key)).statusCode).toBe(200);
    expect((await patch(a.policy_id, { name: 'gamma' }, key)).statusCode).toBe(200);
    expect((await patch(b.policy_id, { name: 'alpha' }, key)).statusCode).toBe(200);
    await createOk(t, key, { name: 'beta' });
  });

  it('admin key updates any tenant\'s policy (audited admin_on_behalf_of); a CLOSED owner → 409 TENANT_CLOSED and nothing changes', async () => {
    const { t, key } = await tenantWithKey();
    const p = await createOk(t, key);
    const res = await patch(p.policy_id, { description: 'by admin' });
    expect(res.statusCode, res.body).toBe(200);
    const rows = await auditRows(`tenant_id=${t.id}&operation=updatePolicy`);
    expect(rows[0].metadata.actor_type).toBe('admin_on_behalf_of');
    expect((await adm('PATCH', `/v1/admin/tenants/${t.id}`, { status: 'CLOSED' })).statusCode).toBe(200);
    const before = await listAll(t);
    expectError(await patch(p.policy_id, { status: 'DISABLED' }), 409, 'TENANT_CLOSED');
    expect(await listAll(t)).toEqual(before);
  });
});
