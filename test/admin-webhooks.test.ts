import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, createTenant, json, startHarness, type Harness, type TestTenant } from './helpers.js';
import {
  DEFAULT_WEBHOOK_SECURITY, SecretCipher, deriveSecretKey, ownerOfSubscriptionId, urlProblem,
} from '../src/domain/webhooks.js';

/**
 * Webhook subscriptions (admin digest §2.5, §5.1, §5.6, §5.7) and the webhook-security config
 * (§2.9): both selector invariants on every path, URL validation, the encrypted signing secret,
 * lifecycle events with their correlation ids, tenant self-service and audit rows.
 */

let h: Harness;
const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const OPEN = { blocked_cidr_ranges: [], allowed_url_patterns: [], allow_http: true };

beforeAll(async () => {
  // A prefix of its own: the security config is one key per deployment.
  h = await startHarness({ keyPrefix: 'cywhtest' });
  expect((await put(OPEN)).statusCode).toBe(200);
});
afterAll(async () => h.close());

type Method = 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';
function call(method: Method, url: string, payload?: unknown, headers: Record<string, string> = ADMIN) {
  return h.admin.inject({ method, url, headers, ...(payload === undefined ? {} : { payload: payload as object }) });
}
const put = (config: unknown) => call('PUT', '/v1/admin/config/webhook-security', config);
const withKey = (key: string) => ({ 'x-cycles-api-key': key });

function expectError(res: LightMyRequestResponse, status: number, code: string): any {
  expect(res.statusCode, res.body).toBe(status);
  const body = json(res);
  expect(body.error, res.body).toBe(code);
  expect(body.request_id).toBe(res.headers['x-request-id']);
  return body;
}

async function keyWith(t: TestTenant, permissions: string[]): Promise<string> {
  const res = await call('POST', '/v1/admin/api-keys', { tenant_id: t.id, name: 'webhook test', permissions });
  expect(res.statusCode, res.body).toBe(201);
  return json(res).key_secret as string;
}

function body(extra: Record<string, unknown> = {}) {
  return { name: 'hook', url: 'https://hooks.example.com/in', event_types: ['budget.funded'], ...extra };
}

function createAdmin(payload: unknown, tenant?: TestTenant) {
  return call('POST', `/v1/admin/webhooks${tenant ? `?tenant_id=${tenant.id}` : ''}`, payload);
}

async function created(payload: unknown, tenant?: TestTenant): Promise<any> {
  const res = await createAdmin(payload, tenant);
  expect(res.statusCode, res.body).toBe(201);
  return json(res);
}

async function outboxEvents(ownerId: string): Promise<any[]> {
  const entries = await h.system.redis.xrange(h.system.keys.outbox(ownerId), '-', '+');
  return entries.map(([, fields]) => JSON.parse(fields[1]!));
}

async function auditRows(query: string): Promise<any[]> {
  const res = await call('GET', `/v1/admin/audit/logs?limit=100&${query}`);
  expect(res.statusCode, res.body).toBe(200);
  return json(res).logs;
}

async function ownedIds(ownerId: string): Promise<string[]> {
  return h.system.redis.zrange(h.system.keys.webhookIndex(ownerId), 0, -1);
}

describe('webhooks: pure rules (unit)', () => {
  it('ids carry their owner, including __system__', () => {
    expect(ownerOfSubscriptionId('whsub_acme-1_0123456789abcdef')).toBe('acme-1');
    expect(ownerOfSubscriptionId('whsub___system___0123456789abcdef')).toBe('__system__');
    expect(ownerOfSubscriptionId('whsub_acme_xyz')).toBeUndefined();
    expect(ownerOfSubscriptionId('pol_acme_0123456789abcdef')).toBeUndefined();
  });

  it('secrets round-trip through AES-256-GCM; a different key cannot read them', () => {
    const c = new SecretCipher(deriveSecretKey('k1'));
    const stored = c.encrypt('whsec_abc');
    expect(stored).not.toContain('whsec_abc');
    expect(c.decrypt(stored)).toBe('whsec_abc');
    expect(() => new SecretCipher(deriveSecretKey('k2')).decrypt(stored)).toThrow();
  });

  it('URL rules: https, blocked ranges (IPv4, IPv6, mapped), unresolvable hosts, allowed patterns', async () => {
    const resolve = async (host: string) => (host === 'internal.test' ? ['10.0.0.5'] : host === 'public.test' ? ['93.184.216.34'] : []);
    const d = DEFAULT_WEBHOOK_SECURITY;
    expect(await urlProblem('http://public.test/x', d, resolve)).toMatch(/https/);
    expect(await urlProblem('https://public.test/x', d, resolve)).toBeUndefined();
    expect(await urlProblem('https://internal.test/x', d, resolve)).toMatch(/blocked/);
    expect(await urlProblem('https://127.0.0.1/x', d, resolve)).toMatch(/blocked/);
    expect(await urlProblem('https://[::1]/x', d, resolve)).toMatch(/blocked/);
    expect(await urlProblem('https://[::ffff:10.1.2.3]/x', d, resolve)).toMatch(/blocked/);
    expect(await urlProblem('https://nowhere.test/x', d, resolve)).toMatch(/resolved/);
    expect(await urlProblem('ftp://public.test/x', d, resolve)).toMatch(/https/);
    expect(await urlProblem('not a url', d, resolve)).toMatch(/valid/);
    const patterns = { ...OPEN, allowed_url_patterns: ['https://*.example.com/*'] };
    expect(await urlProblem('https://a.example.com/in', patterns, resolve)).toBeUndefined();
    expect(await urlProblem('https://example.org/in', patterns, resolve)).toMatch(/pattern/);
  });
});

describe('webhooks: security config', () => {
  it('PUT replaces, GET returns it; unknown property or bad CIDR → 400 and nothing changes; audit row', async () => {
    const res = await put({ allow_http: true, blocked_cidr_ranges: [] });
    expect(res.statusCode, res.body).toBe(200);
    expect(json(res)).toEqual(OPEN);
    expect(json(await call('GET', '/v1/admin/config/webhook-security'))).toEqual(OPEN);
    expectError(await put({ ...OPEN, extra: 1 }), 400, 'INVALID_REQUEST');
    expectError(await put({ ...OPEN, blocked_cidr_ranges: ['10.0.0.0/33'] }), 400, 'INVALID_REQUEST');
    expect(json(await call('GET', '/v1/admin/config/webhook-security'))).toEqual(OPEN);
    expectError(await call('GET', '/v1/admin/config/webhook-security', undefined, {}), 401, 'UNAUTHORIZED');
    const rows = await auditRows('operation=updateWebhookSecurityConfig');
    expect(rows.length).toBeGreaterThan(0);
  });

  it('default config: http and hosts in blocked ranges → 400 WEBHOOK_URL_INVALID; nothing stored', async () => {
    const t = await createTenant(h, { budgets: [] });
    await put({});
    try {
      expect(json(await call('GET', '/v1/admin/config/webhook-security'))).toEqual(DEFAULT_WEBHOOK_SECURITY);
      for (const url of ['http://example.com/hook', 'https://127.0.0.1/hook', 'https://10.1.2.3/hook', 'https://[::1]/hook']) {
        const b = expectError(await createAdmin(body({ url }), t), 400, 'WEBHOOK_URL_INVALID');
        expect(b.message).toContain(url);
      }
      expect(await ownedIds(t.id)).toEqual([]);
    } finally {
      await put(OPEN);
    }
  });
});

describe('webhooks: admin create', () => {
  it('tenant-owned → 201 {subscription, signing_secret}; secret whsec_ + 43, encrypted at rest, never returned again; defaults; event and audit', async () => {
    const t = await createTenant(h, { budgets: [] });
    const res = await createAdmin(body({ headers: { 'X-Token': 'abc' } }), t);
    expect(res.statusCode, res.body).toBe(201);
    const { subscription: sub, signing_secret: secret } = json(res);
    expect(secret).toMatch(/^whsec_[A-Za-z0-9_-]{43}$/);
    expect(sub.subscription_id).toMatch(new RegExp(`^whsub_${t.id}_[0-9a-f]{16}$`));
    expect(sub).toMatchObject({
      tenant_id: t.id, url: 'https://hooks.example.com/in', event_types: ['budget.funded'], status: 'ACTIVE',
      retry_policy: { max_retries: 5, initial_delay_ms: 1000, backoff_multiplier: 2, max_delay_ms: 60000 },
      disable_after_failures: 10, consecutive_failures: 0, headers: { 'X-Token': '********' },
    });
    const raw = await h.system.redis.hgetall(h.system.keys.webhook(t.id, sub.subscription_id));
    expect(JSON.stringify(raw)).not.toContain(secret);
    const got = await call('GET', `/v1/admin/webhooks/${sub.subscription_id}`);
    expect(got.statusCode).toBe(200);
    expect(got.body).not.toContain(secret);
    expect(json(got)).not.toHaveProperty('signing_secret');
    const events = (await outboxEvents(t.id)).filter((e) => e.event_type === 'webhook.created');
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ correlation_id: `webhook_create:${sub.subscription_id}`, category: 'webhook', data: { subscription_id: sub.subscription_id, new_status: 'ACTIVE' } });
    const rows = await auditRows(`tenant_id=${t.id}&operation=createWebhookSubscription`);
    expect(rows.map((r) => r.resource_id)).toEqual([sub.subscription_id]);
  });

  it('a given signing_secret is kept; retry_policy is merged with defaults', async () => {
    const t = await createTenant(h, { budgets: [] });
    const out = await created(body({ signing_secret: 'my-secret', retry_policy: { max_retries: 0 }, disable_after_failures: 2 }), t);
    expect(out.signing_secret).toBe('my-secret');
    expect(out.subscription.retry_policy).toEqual({ max_retries: 0, initial_delay_ms: 1000, backoff_multiplier: 2, max_delay_ms: 60000 });
    expect(out.subscription.disable_after_failures).toBe(2);
  });

  it('INVARIANT 2: tenant-owned with a policy category or an api_key type → 400; without tenant_id → 201 owned by __system__', async () => {
    const t = await createTenant(h, { budgets: [] });
    expectError(await createAdmin(body({ event_categories: ['policy'] }), t), 400, 'INVALID_REQUEST');
    expectError(await createAdmin(body({ event_types: ['api_key.created'] }), t), 400, 'INVALID_REQUEST');
    expect(await ownedIds(t.id)).toEqual([]);
    const sys = await created(body({ event_categories: ['policy', 'system'] }));
    expect(sys.subscription.tenant_id).toBe('__system__');
    expect(sys.subscription.event_categories).toEqual(['policy', 'system']);
    expect(await call('DELETE', `/v1/admin/webhooks/${sys.subscription.subscription_id}`).then((r) => r.statusCode)).toBe(204);
  });

  it('INVARIANT 1 and vocabulary: event_types [] or an unknown type → 400; unknown property → 400', async () => {
    const t = await createTenant(h, { budgets: [] });
    expectError(await createAdmin(body({ event_types: [] }), t), 400, 'INVALID_REQUEST');
    expectError(await createAdmin(body({ event_types: ['budget.nope'] }), t), 400, 'INVALID_REQUEST');
    expectError(await createAdmin(body({ bogus: true }), t), 400, 'INVALID_REQUEST');
    expect(await ownedIds(t.id)).toEqual([]);
  });

  it('unknown tenant → 404; closed tenant → 409 TENANT_CLOSED on create, patch and delete', async () => {
    expectError(await createAdmin(body(), { id: 'no-such-tenant-wh' } as TestTenant), 404, 'TENANT_NOT_FOUND');
    const t = await createTenant(h, { budgets: [] });
    const id = (await created(body(), t)).subscription.subscription_id;
    expect((await call('PATCH', `/v1/admin/tenants/${t.id}`, { status: 'CLOSED' })).statusCode).toBe(200);
    expectError(await createAdmin(body(), t), 409, 'TENANT_CLOSED');
    expectError(await call('PATCH', `/v1/admin/webhooks/${id}`, { status: 'PAUSED' }), 409, 'TENANT_CLOSED');
    expectError(await call('DELETE', `/v1/admin/webhooks/${id}`), 409, 'TENANT_CLOSED');
    // The close cascade disabled it; GET still answers.
    expect(json(await call('GET', `/v1/admin/webhooks/${id}`)).status).toBe('DISABLED');
  });
});

describe('webhooks: admin update and delete', () => {
  it('INVARIANT 1 on PATCH: event_types [] → 400 without categories, 200 with stored categories', async () => {
    const t = await createTenant(h, { budgets: [] });
    const typesOnly = (await created(body(), t)).subscription.subscription_id;
    expectError(await call('PATCH', `/v1/admin/webhooks/${typesOnly}`, { event_types: [] }), 400, 'INVALID_REQUEST');
    expect(json(await call('GET', `/v1/admin/webhooks/${typesOnly}`)).event_types).toEqual(['budget.funded']);
    const withCat = (await created(body({ event_categories: ['budget'] }), t)).subscription.subscription_id;
    const res = await call('PATCH', `/v1/admin/webhooks/${withCat}`, { event_types: [] });
    expect(res.statusCode, res.body).toBe(200);
    expect(json(res)).toMatchObject({ event_types: [], event_categories: ['budget'] });
    expectError(await call('PATCH', `/v1/admin/webhooks/${withCat}`, { event_categories: ['webhook'] }), 400, 'INVALID_REQUEST');
  });

  it('status DISABLED → 400 and unchanged; a new URL is re-validated', async () => {
    const t = await createTenant(h, { budgets: [] });
    const id = (await created(body(), t)).subscription.subscription_id;
    expectError(await call('PATCH', `/v1/admin/webhooks/${id}`, { status: 'DISABLED' }), 400, 'INVALID_REQUEST');
    expectError(await call('PATCH', `/v1/admin/webhooks/${id}`, { url: 'ftp://x.example.com' }), 400, 'WEBHOOK_URL_INVALID');
    expect(json(await call('GET', `/v1/admin/webhooks/${id}`))).toMatchObject({ status: 'ACTIVE', url: 'https://hooks.example.com/in' });
  });

  it('ACTIVE→PAUSED emits one webhook.paused (webhook_update:<id>:<request_id>); an identical PATCH emits none; resume and update events', async () => {
    const t = await createTenant(h, { budgets: [] });
    const id = (await created(body(), t)).subscription.subscription_id;
    const pause = await call('PATCH', `/v1/admin/webhooks/${id}`, { status: 'PAUSED' });
    expect(pause.statusCode, pause.body).toBe(200);
    expect(json(pause).status).toBe('PAUSED');
    const again = await call('PATCH', `/v1/admin/webhooks/${id}`, { status: 'PAUSED' });
    expect(again.statusCode).toBe(200);
    const resume = await call('PATCH', `/v1/admin/webhooks/${id}`, { status: 'ACTIVE', name: 'renamed' });
    const rename = await call('PATCH', `/v1/admin/webhooks/${id}`, { name: 'renamed twice', url: 'https://hooks.example.com/in' });
    const events = (await outboxEvents(t.id)).filter((e) => e.event_type !== 'webhook.created' && e.category === 'webhook');
    expect(events.map((e) => [e.event_type, e.correlation_id])).toEqual([
      ['webhook.paused', `webhook_update:${id}:${pause.headers['x-request-id']}`],
      ['webhook.resumed', `webhook_update:${id}:${resume.headers['x-request-id']}`],
      ['webhook.updated', `webhook_update:${id}:${rename.headers['x-request-id']}`],
    ]);
    expect(events[0].data).toMatchObject({ previous_status: 'ACTIVE', new_status: 'PAUSED' });
    expect(events[1].data.changed_fields).toEqual(['name']);
    expect(events[2].data.changed_fields).toEqual(['name']);
    const rows = await auditRows(`tenant_id=${t.id}&operation=updateWebhookSubscription`);
    expect(rows).toHaveLength(4);
  });

  it('DELETE → 204, GET → 404 WEBHOOK_NOT_FOUND, webhook.deleted with previous_status; indexes cleaned', async () => {
    const t = await createTenant(h, { budgets: [] });
    const id = (await created(body(), t)).subscription.subscription_id;
    await call('PATCH', `/v1/admin/webhooks/${id}`, { status: 'PAUSED' });
    expect((await call('DELETE', `/v1/admin/webhooks/${id}`)).statusCode).toBe(204);
    expectError(await call('GET', `/v1/admin/webhooks/${id}`), 404, 'WEBHOOK_NOT_FOUND');
    expectError(await call('DELETE', `/v1/admin/webhooks/${id}`), 404, 'WEBHOOK_NOT_FOUND');
    expectError(await call('GET', '/v1/admin/webhooks/whsub_nope'), 404, 'WEBHOOK_NOT_FOUND');
    const deleted = (await outboxEvents(t.id)).filter((e) => e.event_type === 'webhook.deleted');
    expect(deleted).toHaveLength(1);
    expect(deleted[0]).toMatchObject({ correlation_id: `webhook_delete:${id}`, data: { previous_status: 'PAUSED' } });
    expect(await ownedIds(t.id)).toEqual([]);
    expect(await h.system.redis.zscore(h.system.keys.webhookRegistry(), id)).toBeNull();
  });
});

describe('webhooks: listing', () => {
  it('filters by tenant_id, status, event_type and search; pages with a cursor', async () => {
    const t = await createTenant(h, { budgets: [] });
    const ids: string[] = [];
    for (let i = 0; i < 3; i += 1) ids.push((await created(body({ url: `https://h${i}.example.com/in`, event_types: i === 2 ? ['tenant.suspended'] : ['budget.funded'] }), t)).subscription.subscription_id);
    ids.sort();
    await call('PATCH', `/v1/admin/webhooks/${ids[0]}`, { status: 'PAUSED' });
    const list = async (q: string) => {
      const res = await call('GET', `/v1/admin/webhooks?tenant_id=${t.id}${q}`);
      expect(res.statusCode, res.body).toBe(200);
      return json(res);
    };
    expect((await list('')).subscriptions.map((s: any) => s.subscription_id)).toEqual(ids);
    expect((await list('&status=PAUSED')).subscriptions.map((s: any) => s.subscription_id)).toEqual([ids[0]]);
    expect((await list('&status=BOGUS')).subscriptions).toEqual([]);
    expect((await list('&event_type=tenant.suspended')).subscriptions).toHaveLength(1);
    expect((await list('&search=H1.EXAMPLE')).subscriptions.map((s: any) => s.url)).toEqual(['https://h1.example.com/in']);
    const p1 = await list('&limit=2');
    expect(p1.subscriptions).toHaveLength(2);
    expect(p1.has_more).toBe(true);
    const p2 = await list(`&limit=2&cursor=${p1.next_cursor}`);
    expect(p2.subscriptions.map((s: any) => s.subscription_id)).toEqual([ids[2]]);
    expect(p2.has_more).toBe(false);
    expect(p2.next_cursor).toBeUndefined();
    expectError(await call('GET', `/v1/admin/webhooks?tenant_id=${t.id}&cursor=garbage`), 400, 'INVALID_REQUEST');
    const all = json(await call('GET', `/v1/admin/webhooks?search=${ids[1]}`));
    expect(all.subscriptions.map((s: any) => s.subscription_id)).toEqual([ids[1]]);
  });
});

describe('webhooks: tenant self-service', () => {
  it('tenant key creates (owner = key tenant, no event), reads, patches and deletes its own; boundary enforced', async () => {
    const t = await createTenant(h, { budgets: [] });
    const key = await keyWith(t, ['webhooks:read', 'webhooks:write']);
    expectError(await call('POST', '/v1/webhooks', body({ event_categories: ['api_key'] }), withKey(key)), 400, 'INVALID_REQUEST');
    const res = await call('POST', '/v1/webhooks', body(), withKey(key));
    expect(res.statusCode, res.body).toBe(201);
    const id = json(res).subscription.subscription_id;
    expect(json(res).subscription.tenant_id).toBe(t.id);
    expect(json(await call('GET', `/v1/webhooks/${id}`, undefined, withKey(key))).subscription_id).toBe(id);
    const listed = json(await call('GET', '/v1/webhooks', undefined, withKey(key)));
    expect(listed.subscriptions.map((s: any) => s.subscription_id)).toEqual([id]);
    expect((await call('PATCH', `/v1/webhooks/${id}`, { status: 'PAUSED' }, withKey(key))).statusCode).toBe(200);
    expect((await call('DELETE', `/v1/webhooks/${id}`, undefined, withKey(key))).statusCode).toBe(204);
    expect((await outboxEvents(t.id)).filter((e) => e.category === 'webhook')).toEqual([]);
    const rows = await auditRows(`tenant_id=${t.id}&operation=createTenantWebhook`);
    expect(rows.map((r) => r.key_id)).toHaveLength(1);
  });

  it("another tenant's subscription → 404 (never 403); read-only key → 403 on writes; `tenant` with a tenant key → 400", async () => {
    const a = await createTenant(h, { budgets: [] });
    const b = await createTenant(h, { budgets: [] });
    const id = (await created(body(), a)).subscription.subscription_id;
    const keyB = await keyWith(b, ['webhooks:read', 'webhooks:write']);
    expectError(await call('GET', `/v1/webhooks/${id}`, undefined, withKey(keyB)), 404, 'WEBHOOK_NOT_FOUND');
    expectError(await call('PATCH', `/v1/webhooks/${id}`, { status: 'PAUSED' }, withKey(keyB)), 404, 'WEBHOOK_NOT_FOUND');
    expectError(await call('DELETE', `/v1/webhooks/${id}`, undefined, withKey(keyB)), 404, 'WEBHOOK_NOT_FOUND');
    expect(json(await call('GET', `/v1/admin/webhooks/${id}`)).status).toBe('ACTIVE');
    const readOnly = await keyWith(b, ['webhooks:read']);
    expectError(await call('POST', '/v1/webhooks', body(), withKey(readOnly)), 403, 'INSUFFICIENT_PERMISSIONS');
    expectError(await call('GET', `/v1/webhooks?tenant=${a.id}`, undefined, withKey(keyB)), 400, 'INVALID_REQUEST');
  });

  it('admin key: POST /v1/webhooks → 401; GET /v1/webhooks needs `tenant`; by-id routes are dual-auth', async () => {
    const t = await createTenant(h, { budgets: [] });
    expectError(await call('POST', '/v1/webhooks', body()), 401, 'UNAUTHORIZED');
    const b = expectError(await call('GET', '/v1/webhooks'), 400, 'INVALID_REQUEST');
    expect(b.message).toMatch(/tenant/);
    const id = (await created(body(), t)).subscription.subscription_id;
    expect(json(await call('GET', `/v1/webhooks?tenant=${t.id}`)).subscriptions.map((s: any) => s.subscription_id)).toEqual([id]);
    expect(json(await call('GET', `/v1/webhooks/${id}`)).subscription_id).toBe(id);
    expect((await call('DELETE', `/v1/webhooks/${id}`)).statusCode).toBe(204);
  });
});
