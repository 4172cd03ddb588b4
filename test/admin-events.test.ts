import { randomBytes } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, createTenant, json, startHarness, USD, type Harness, type TestTenant } from './helpers.js';
import { deliveryView, EVENT_SCAN_BUDGET } from '../src/domain/events.js';

/**
 * Event and delivery listings (admin digest §2.6, §2.7: listEvents, getEvent, listTenantEvents,
 * listWebhookDeliveries, listTenantWebhookDeliveries) and the admin overview (§2.10). The events
 * service writes the logs; here the fixtures are written straight into Redis in its layout
 * (src/store/keys.ts, "events and deliveries"), so these tests read exactly what the relay and
 * the delivery worker store.
 */

let h: Harness;
const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const OPEN = { blocked_cidr_ranges: [], allowed_url_patterns: [], allow_http: true };
const DAY_MS = 86_400_000;

beforeAll(async () => {
  // A prefix of its own: the global event index and the overview see only this file's data.
  h = await startHarness({ keyPrefix: 'cyevtest' });
  const res = await h.admin.inject({ method: 'PUT', url: '/v1/admin/config/webhook-security', headers: ADMIN, payload: OPEN });
  expect(res.statusCode, res.body).toBe(200);
});
afterAll(async () => h.close());

function get(url: string, headers: Record<string, string> = ADMIN): Promise<LightMyRequestResponse> {
  return h.admin.inject({ method: 'GET', url, headers });
}

function expectError(res: LightMyRequestResponse, status: number, code: string): any {
  expect(res.statusCode, res.body).toBe(status);
  const body = json(res);
  expect(body.error, res.body).toBe(code);
  expect(body.request_id).toBe(res.headers['x-request-id']);
  return body;
}

function hex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

async function keyWith(t: TestTenant, permissions: string[]): Promise<string> {
  const res = await h.admin.inject({ method: 'POST', url: '/v1/admin/api-keys', headers: ADMIN, payload: { tenant_id: t.id, name: 'events test', permissions } });
  expect(res.statusCode, res.body).toBe(201);
  return json(res).key_secret as string;
}

// --- fixtures in the events service's layout ---

interface EventFixture {
  tenant: string;
  type: string;
  tsMs: number;
  id?: string;
  scope?: string;
  correlation_id?: string;
  request_id?: string;
  trace_id?: string;
  data?: Record<string, unknown>;
}

/** Stores one event as the relay does: the JSON, both time indexes, the correlation set. */
async function writeEvent(f: EventFixture): Promise<any> {
  const { redis, keys } = h.system;
  const event: Record<string, unknown> = {
    event_id: f.id ?? `evt_${hex(8)}`,
    event_type: f.type,
    category: f.type.slice(0, f.type.indexOf('.')),
    timestamp: new Date(f.tsMs).toISOString(),
    tenant_id: f.tenant,
    ...(f.scope ? { scope: f.scope } : {}),
    actor: { type: 'admin' },
    source: 'cycles-admin',
    data: f.data ?? { n: 1 },
    ...(f.correlation_id ? { correlation_id: f.correlation_id } : {}),
    ...(f.request_id ? { request_id: f.request_id } : {}),
    ...(f.trace_id ? { trace_id: f.trace_id } : {}),
  };
  const id = String(event.event_id);
  await redis.set(keys.event(id), JSON.stringify(event), 'PX', DAY_MS);
  await redis.zadd(keys.tenantEvents(f.tenant), f.tsMs, id);
  await redis.zadd(keys.allEvents(), f.tsMs, id);
  if (f.correlation_id) await redis.sadd(keys.eventCorrelation(f.correlation_id), id);
  return event;
}

/** Stores one delivery as the delivery worker does: the hash (with internal fields) and the subscription's index. */
async function writeDelivery(owner: string, sub: string, attemptedMs: number, fields: Record<string, string> = {}): Promise<string> {
  const { redis, keys } = h.system;
  const id = fields.delivery_id ?? `del_${hex(8)}`;
  await redis.hset(keys.delivery(owner, id), {
    delivery_id: id, subscription_id: sub, event_id: `evt_${hex(8)}`, event_type: 'budget.funded', status: 'SUCCESS',
    attempted_at: new Date(attemptedMs).toISOString(), attempted_at_ms: String(attemptedMs), attempts: '1',
    owner, tenant_id: owner, ...fields,
  });
  await redis.zadd(keys.subscriptionDeliveries(owner, sub), attemptedMs, id);
  return id;
}

async function subscription(t: TestTenant | undefined): Promise<string> {
  const res = await h.admin.inject({
    method: 'POST', url: `/v1/admin/webhooks${t ? `?tenant_id=${t.id}` : ''}`, headers: ADMIN,
    payload: { url: 'https://hooks.example.com/in', event_types: ['budget.funded'] },
  });
  expect(res.statusCode, res.body).toBe(201);
  return json(res).subscription.subscription_id as string;
}

/** Every page of a listing, following next_cursor; asserts has_more agrees with the cursor. */
async function allPages(url: string, wrapper: string, headers: Record<string, string> = ADMIN): Promise<{ rows: any[]; pages: number }> {
  const rows: any[] = [];
  let cursor: string | undefined;
  let pages = 0;
  for (;;) {
    const res = await get(`${url}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, headers);
    expect(res.statusCode, res.body).toBe(200);
    const body = json(res);
    pages += 1;
    rows.push(...body[wrapper]);
    expect(body.has_more).toBe(body.next_cursor !== undefined);
    if (!body.has_more) return { rows, pages };
    cursor = body.next_cursor;
    expect(pages).toBeLessThan(200);
  }
}

const ids = (rows: any[]) => rows.map((r) => r.delivery_id ?? r.event_id);

describe('deliveryView (unit)', () => {
  it('maps the stored hash to WebhookDelivery: numbers, boolean, no internal fields, next_retry_at only while RETRYING', () => {
    const base = {
      delivery_id: 'del_1', subscription_id: 'whsub_a_0123456789abcdef', event_id: 'evt_1', event_type: 'budget.funded',
      attempted_at: '2026-01-01T00:00:00.000Z', attempted_at_ms: '1767225600000', attempts: '3', response_status: '500',
      response_time_ms: '12', error_message: 'HTTP 500', next_retry_at: '2026-01-01T00:00:04.000Z',
      trace_id: 'a'.repeat(32), trace_flags: '01', traceparent_inbound_valid: 'true', owner: 'a', tenant_id: 'a',
    };
    expect(deliveryView({ ...base, status: 'RETRYING' })).toEqual({
      delivery_id: 'del_1', subscription_id: 'whsub_a_0123456789abcdef', event_id: 'evt_1', event_type: 'budget.funded',
      status: 'RETRYING', attempted_at: '2026-01-01T00:00:00.000Z', attempts: 3, response_status: 500, response_time_ms: 12,
      error_message: 'HTTP 500', next_retry_at: '2026-01-01T00:00:04.000Z', trace_id: 'a'.repeat(32), trace_flags: '01',
      traceparent_inbound_valid: true,
    });
    const failed = deliveryView({ ...base, status: 'FAILED', completed_at: '2026-01-01T00:01:00.000Z', traceparent_inbound_valid: 'false' });
    expect(failed).not.toHaveProperty('next_retry_at');
    expect(failed).toMatchObject({ completed_at: '2026-01-01T00:01:00.000Z', traceparent_inbound_valid: false });
    const pending = deliveryView({ delivery_id: 'd', subscription_id: 's', event_id: 'e', status: 'PENDING', attempted_at_ms: '0', attempts: '0', response_status: '' });
    expect(pending).toEqual({ delivery_id: 'd', subscription_id: 's', event_id: 'e', status: 'PENDING', attempted_at: '1970-01-01T00:00:00.000Z', attempts: 0 });
  });
});

describe('getEvent', () => {
  it('returns the stored event as stored; unknown id → 404 EVENT_NOT_FOUND; tenant key → 401', async () => {
    const t = await createTenant(h, { budgets: [] });
    const e = await writeEvent({ tenant: t.id, type: 'budget.funded', tsMs: Date.now(), scope: t.scope(), trace_id: hex(16) });
    const res = await get(`/v1/admin/events/${e.event_id}`);
    expect(res.statusCode, res.body).toBe(200);
    expect(json(res)).toEqual(e);
    const body = expectError(await get(`/v1/admin/events/evt_${hex(8)}`), 404, 'EVENT_NOT_FOUND');
    expect(body.message).toMatch(/Event not found/);
    expectError(await get(`/v1/admin/events/${e.event_id}`, { 'x-cycles-api-key': t.key }), 401, 'UNAUTHORIZED');
  });

  it('an event whose record expired (still indexed) is 404 and is skipped by listings', async () => {
    const t = await createTenant(h, { budgets: [] });
    const now = Date.now();
    const kept = await writeEvent({ tenant: t.id, type: 'budget.funded', tsMs: now - 2 });
    const gone = await writeEvent({ tenant: t.id, type: 'budget.funded', tsMs: now - 1 });
    await h.system.redis.del(h.system.keys.event(gone.event_id));
    expectError(await get(`/v1/admin/events/${gone.event_id}`), 404, 'EVENT_NOT_FOUND');
    const body = json(await get(`/v1/admin/events?tenant_id=${t.id}`));
    expect(ids(body.events)).toEqual([kept.event_id]);
    expect(body.has_more).toBe(false);
  });
});

describe('listEvents (admin)', () => {
  it('newest first; limit pages with event-id cursors, exactly once each, including many events in one millisecond', async () => {
    const t = await createTenant(h, { budgets: [] });
    const base = Date.now() - 60_000;
    const written: any[] = [];
    for (let i = 0; i < 7; i += 1) written.push(await writeEvent({ tenant: t.id, type: 'budget.funded', tsMs: base + i }));
    // Six events share one millisecond, as the events of one script do.
    for (let i = 0; i < 6; i += 1) written.push(await writeEvent({ tenant: t.id, type: 'budget.debited', tsMs: base + 100 }));
    const expected = [...written].sort((a, b) => Date.parse(b.timestamp) - Date.parse(a.timestamp) || (a.event_id < b.event_id ? 1 : -1));

    const first = json(await get(`/v1/admin/events?tenant_id=${t.id}&limit=4`));
    expect(first.events).toHaveLength(4);
    expect(first.has_more).toBe(true);
    expect(first.next_cursor).toBe(first.events[3].event_id);
    const { rows, pages } = await allPages(`/v1/admin/events?tenant_id=${t.id}&limit=4`, 'events');
    expect(pages).toBe(4);
    expect(ids(rows)).toEqual(ids(expected));

    const asc = await allPages(`/v1/admin/events?tenant_id=${t.id}&limit=5&sort_by=timestamp&sort_dir=ASC`, 'events');
    expect(ids(asc.rows)).toEqual(ids(expected).reverse());
  });

  it('limit is clamped into [1, 100]; a non-integer limit → 400', async () => {
    const t = await createTenant(h, { budgets: [] });
    for (let i = 0; i < 3; i += 1) await writeEvent({ tenant: t.id, type: 'tenant.updated', tsMs: Date.now() - i });
    expect(json(await get(`/v1/admin/events?tenant_id=${t.id}&limit=0`)).events).toHaveLength(1);
    expect(json(await get(`/v1/admin/events?tenant_id=${t.id}&limit=1000`)).events).toHaveLength(3);
    expectError(await get(`/v1/admin/events?tenant_id=${t.id}&limit=abc`), 400, 'INVALID_REQUEST');
  });

  it('filters: tenant_id, event_type, category, scope prefix, search, from/to, trace_id, request_id; AND-combined', async () => {
    const t = await createTenant(h, { budgets: [] });
    const other = await createTenant(h, { budgets: [] });
    const now = Date.now();
    const trace = hex(16);
    const requestId = `req_${hex(6)}`;
    const a = await writeEvent({ tenant: t.id, type: 'budget.funded', tsMs: now - 5000, scope: `tenant:${t.id}/workspace:prod`, trace_id: trace, request_id: requestId });
    const b = await writeEvent({ tenant: t.id, type: 'budget.debited', tsMs: now - 4000, scope: `tenant:${t.id}/workspace:dev`, trace_id: trace });
    const c = await writeEvent({ tenant: t.id, type: 'api_key.created', tsMs: now - 3000, correlation_id: `corr-${t.id}-x` });
    const d = await writeEvent({ tenant: other.id, type: 'budget.funded', tsMs: now - 2000, scope: `tenant:${other.id}`, trace_id: trace });
    const list = async (q: string) => ids(json(await get(`/v1/admin/events?limit=100&${q}`)).events);

    expect(await list(`tenant_id=${t.id}`)).toEqual([c.event_id, b.event_id, a.event_id]);
    expect(await list(`tenant_id=${t.id}&event_type=budget.funded`)).toEqual([a.event_id]);
    expect(await list(`tenant_id=${t.id}&category=api_key`)).toEqual([c.event_id]);
    expect(await list(`tenant_id=${t.id}&scope=${encodeURIComponent(`tenant:${t.id}/workspace:`)}`)).toEqual([b.event_id, a.event_id]);
    expect(await list(`tenant_id=${t.id}&scope=${encodeURIComponent(`TENANT:${t.id}/workspace:prod`)}`)).toEqual([a.event_id]);
    expect(await list(`tenant_id=${t.id}&search=WORKSPACE:DEV`)).toEqual([b.event_id]);
    expect(await list(`tenant_id=${t.id}&search=${encodeURIComponent(`corr-${t.id}`)}`)).toEqual([c.event_id]);
    expect(await list(`tenant_id=${t.id}&search=%20%20`)).toHaveLength(3);
    const iso = (ms: number) => encodeURIComponent(new Date(ms).toISOString());
    expect(await list(`tenant_id=${t.id}&from=${iso(now - 4000)}&to=${iso(now - 3000)}`)).toEqual([c.event_id, b.event_id]);
    // No tenant: the global index.
    expect(await list(`trace_id=${trace}`)).toEqual([d.event_id, b.event_id, a.event_id]);
    expect(await list(`trace_id=${trace}&event_type=budget.funded`)).toEqual([d.event_id, a.event_id]);
    expect(await list(`request_id=${requestId}`)).toEqual([a.event_id]);
    expect(await list(`tenant_id=${other.id}&trace_id=${trace}`)).toEqual([d.event_id]);
    expect(await list('tenant_id=no-such-tenant')).toEqual([]);
    expect(await list('tenant_id=Not%20A%20Tenant')).toEqual([]);
    expect(await list(`tenant_id=${t.id}&event_type=custom.billing.sent`)).toEqual([]);
  });

  it('correlation_id reads the correlation set: only its events, newest first, paged, honouring other filters', async () => {
    const t = await createTenant(h, { budgets: [] });
    const other = await createTenant(h, { budgets: [] });
    const corr = `tenant_bulk_action:suspend:req_${hex(6)}`;
    const now = Date.now();
    const mine = [];
    for (let i = 0; i < 5; i += 1) mine.push(await writeEvent({ tenant: t.id, type: 'tenant.suspended', tsMs: now - 10_000 + i, correlation_id: corr }));
    const theirs = await writeEvent({ tenant: other.id, type: 'tenant.suspended', tsMs: now - 9000, correlation_id: corr });
    await writeEvent({ tenant: t.id, type: 'tenant.suspended', tsMs: now - 8000, correlation_id: `other-${hex(4)}` });
    const expected = [theirs, ...mine.reverse()];
    const { rows, pages } = await allPages(`/v1/admin/events?correlation_id=${encodeURIComponent(corr)}&limit=2`, 'events');
    expect(ids(rows)).toEqual(ids(expected));
    expect(pages).toBe(3);
    const scoped = json(await get(`/v1/admin/events?correlation_id=${encodeURIComponent(corr)}&tenant_id=${other.id}`));
    expect(ids(scoped.events)).toEqual([theirs.event_id]);
    expect(json(await get(`/v1/admin/events?correlation_id=nothing-${hex(4)}`))).toEqual({ events: [], has_more: false });
    expectError(await get(`/v1/admin/events?correlation_id=${encodeURIComponent(corr)}&cursor=evt_nope`), 400, 'INVALID_REQUEST');
  });

  it('sort_by event_type / scope / tenant_id: sorted with event_id ties, paged by the last row', async () => {
    const t = await createTenant(h, { budgets: [] });
    const now = Date.now();
    const types = ['tenant.updated', 'budget.funded', 'reservation.denied', 'budget.funded', 'api_key.created'];
    const written = [];
    for (const [i, type] of types.entries()) written.push(await writeEvent({ tenant: t.id, type, tsMs: now - 1000 + i, scope: i % 2 === 0 ? `tenant:${t.id}/app:a${i}` : undefined }));
    const byType = [...written].sort((a, b) => (a.event_type === b.event_type ? (a.event_id < b.event_id ? -1 : 1) : a.event_type < b.event_type ? -1 : 1));
    const asc = await allPages(`/v1/admin/events?tenant_id=${t.id}&sort_by=event_type&sort_dir=asc&limit=2`, 'events');
    expect(ids(asc.rows)).toEqual(ids(byType));
    const desc = await allPages(`/v1/admin/events?tenant_id=${t.id}&sort_by=event_type&limit=2`, 'events');
    expect(ids(desc.rows)).toEqual(ids(byType).reverse());
    const byScope = json(await get(`/v1/admin/events?tenant_id=${t.id}&sort_by=scope&sort_dir=asc`)).events;
    expect(byScope.slice(0, 2).every((e: any) => e.scope === undefined)).toBe(true);
    expect(byScope.slice(2).map((e: any) => e.scope)).toEqual([`tenant:${t.id}/app:a0`, `tenant:${t.id}/app:a2`, `tenant:${t.id}/app:a4`]);
    expectError(await get(`/v1/admin/events?tenant_id=${t.id}&sort_by=event_type&cursor=evt_nope`), 400, 'INVALID_REQUEST');
  });

  it('bad parameters → 400 INVALID_REQUEST naming the parameter', async () => {
    const cases: Array<[string, string]> = [
      ['event_type=budget.nope', 'event_type'],
      ['event_type=whatever', 'event_type'],
      ['category=billing', 'category'],
      ['trace_id=ABC', 'trace_id'],
      [`trace_id=${'A'.repeat(32)}`, 'trace_id'],
      ['from=yesterday', 'from'],
      ['to=2026-13-45T00:00:00Z', 'to'],
      ['from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z', 'from'],
      [`search=${'x'.repeat(129)}`, 'search'],
      ['sort_by=bogus', 'sort_by'],
      ['sort_dir=up', 'sort_dir'],
      [`tenant_id=${'a'.repeat(65)}`, 'tenant_id'],
      ['cursor=evt_not_in_the_index', 'Cursor'],
    ];
    for (const [q, name] of cases) {
      const body = expectError(await get(`/v1/admin/events?${q}`), 400, 'INVALID_REQUEST');
      expect(body.message, q).toContain(name);
    }
    // 128 characters after trimming is fine.
    expect((await get(`/v1/admin/events?search=${encodeURIComponent(` ${'x'.repeat(128)} `)}`)).statusCode).toBe(200);
  });

  it('admin key only: no key → 401; a tenant key → 401', async () => {
    const t = await createTenant(h, { budgets: [] });
    expectError(await get('/v1/admin/events', {}), 401, 'UNAUTHORIZED');
    expectError(await get('/v1/admin/events', { 'x-cycles-api-key': await keyWith(t, ['events:read']) }), 401, 'UNAUTHORIZED');
  });

  it(`a sparse filter examines at most ${EVENT_SCAN_BUDGET} entries per page: a partial page with a cursor, then the match`, async () => {
    const t = await createTenant(h, { budgets: [] });
    const { redis, keys } = h.system;
    const base = Date.now() - 3_600_000;
    const target = await writeEvent({ tenant: t.id, type: 'budget.funded', tsMs: base, request_id: `req_needle_${hex(4)}` });
    const filler = EVENT_SCAN_BUDGET + 100;
    const pipe = redis.pipeline();
    for (let i = 1; i <= filler; i += 1) {
      const id = `evt_fill_${t.id}_${String(i).padStart(5, '0')}`;
      const ts = base + i;
      pipe.set(keys.event(id), JSON.stringify({ event_id: id, event_type: 'budget.funded', category: 'budget', timestamp: new Date(ts).toISOString(), tenant_id: t.id, source: 'x' }), 'PX', DAY_MS);
      pipe.zadd(keys.tenantEvents(t.id), ts, id);
    }
    await pipe.exec();
    const url = `/v1/admin/events?tenant_id=${t.id}&request_id=${target.request_id}&limit=10`;
    const first = json(await get(url));
    expect(first.events).toEqual([]);
    expect(first.has_more).toBe(true);
    const second = json(await get(`${url}&cursor=${first.next_cursor}`));
    expect(ids(second.events)).toEqual([target.event_id]);
    expect(second.has_more).toBe(false);
  });
});

describe('listTenantEvents (GET /v1/events)', () => {
  it('events:read: only the key tenant’s budget, reservation and tenant events; filters and cursors', async () => {
    const t = await createTenant(h, { budgets: [] });
    const other = await createTenant(h, { budgets: [] });
    const key = await keyWith(t, ['events:read']);
    const now = Date.now();
    const corr = `c-${hex(5)}`;
    const visible = [
      await writeEvent({ tenant: t.id, type: 'tenant.created', tsMs: now - 6000 }),
      await writeEvent({ tenant: t.id, type: 'budget.funded', tsMs: now - 5000, scope: `tenant:${t.id}`, correlation_id: corr }),
      await writeEvent({ tenant: t.id, type: 'reservation.denied', tsMs: now - 4000, scope: `tenant:${t.id}/workspace:prod` }),
    ];
    await writeEvent({ tenant: t.id, type: 'api_key.created', tsMs: now - 3000, correlation_id: corr });
    await writeEvent({ tenant: t.id, type: 'webhook.created', tsMs: now - 2000 });
    await writeEvent({ tenant: t.id, type: 'policy.updated', tsMs: now - 1500 });
    await writeEvent({ tenant: other.id, type: 'budget.funded', tsMs: now - 1000, correlation_id: corr });
    const headers = { 'x-cycles-api-key': key };
    const list = async (q: string) => {
      const res = await get(`/v1/events?${q}`, headers);
      expect(res.statusCode, res.body).toBe(200);
      return ids(json(res).events);
    };
    expect(await list('')).toEqual(ids([...visible].reverse()));
    expect(await list('category=budget')).toEqual([visible[1]!.event_id]);
    expect(await list('event_type=reservation.denied')).toEqual([visible[2]!.event_id]);
    expect(await list(`correlation_id=${corr}`)).toEqual([visible[1]!.event_id]);
    expect(await list(`scope=${encodeURIComponent(`tenant:${t.id}/`)}`)).toEqual([visible[2]!.event_id]);
    const { rows } = await allPages('/v1/events?limit=1', 'events', headers);
    expect(ids(rows)).toEqual(ids([...visible].reverse()));
    // Another tenant's event id is not a cursor in this tenant's index.
    const theirs = json(await get(`/v1/admin/events?tenant_id=${other.id}`)).events[0].event_id;
    expectError(await get(`/v1/events?cursor=${theirs}`, headers), 400, 'INVALID_REQUEST');
    // search and sort are not parameters of this operation: ignored.
    expect(await list('search=nothing-matches-this&sort_by=bogus')).toHaveLength(3);
  });

  it('admin-only or unknown event_type, admin-only or unknown category → 400', async () => {
    const t = await createTenant(h, { budgets: [] });
    const headers = { 'x-cycles-api-key': await keyWith(t, ['events:read']) };
    for (const q of ['event_type=api_key.created', 'event_type=webhook.paused', 'event_type=policy.created', 'event_type=system.webhook_test']) {
      expect(expectError(await get(`/v1/events?${q}`, headers), 400, 'INVALID_REQUEST').message, q).toMatch(/admin-only/);
    }
    expect(expectError(await get('/v1/events?event_type=budget.nope', headers), 400, 'INVALID_REQUEST').message).toMatch(/Unknown event type/);
    expectError(await get('/v1/events?event_type=custom.x', headers), 400, 'INVALID_REQUEST');
    for (const c of ['system', 'api_key', 'policy', 'webhook']) {
      expect(expectError(await get(`/v1/events?category=${c}`, headers), 400, 'INVALID_REQUEST').message, c).toMatch(/admin-only/);
    }
    expectError(await get('/v1/events?category=nope', headers), 400, 'INVALID_REQUEST');
    expectError(await get('/v1/events?from=nope', headers), 400, 'INVALID_REQUEST');
  });

  it('without events:read → 403 INSUFFICIENT_PERMISSIONS; admin key alone → 401; no key → 401', async () => {
    const t = await createTenant(h, { budgets: [] });
    expectError(await get('/v1/events', { 'x-cycles-api-key': t.key }), 403, 'INSUFFICIENT_PERMISSIONS');
    expectError(await get('/v1/events', ADMIN), 401, 'UNAUTHORIZED');
    expectError(await get('/v1/events', {}), 401, 'UNAUTHORIZED');
    expect((await get('/v1/events', { 'x-cycles-api-key': await keyWith(t, ['admin:read']) })).statusCode).toBe(200);
  });
});

describe('webhook deliveries', () => {
  it('admin path: newest first in the WebhookDelivery shape, status and from/to filters, delivery-id cursors', async () => {
    const t = await createTenant(h, { budgets: [] });
    const sub = await subscription(t);
    const base = Date.now() - 100_000;
    const written: string[] = [];
    for (let i = 0; i < 5; i += 1) written.push(await writeDelivery(t.id, sub, base + i * 1000, { status: i % 2 === 0 ? 'SUCCESS' : 'FAILED', response_status: i % 2 === 0 ? '204' : '500' }));
    const retrying = await writeDelivery(t.id, sub, base + 10_000, { status: 'RETRYING', attempts: '2', next_retry_at: new Date(base + 20_000).toISOString(), traceparent_inbound_valid: 'true', trace_id: 'b'.repeat(32), trace_flags: '00' });
    const url = `/v1/admin/webhooks/${sub}/deliveries`;
    const all = json(await get(url));
    expect(ids(all.deliveries)).toEqual([retrying, ...[...written].reverse()]);
    expect(all.has_more).toBe(false);
    expect(all.deliveries[0]).toEqual({
      delivery_id: retrying, subscription_id: sub, event_id: expect.stringMatching(/^evt_/), event_type: 'budget.funded', status: 'RETRYING',
      attempted_at: new Date(base + 10_000).toISOString(), attempts: 2, next_retry_at: new Date(base + 20_000).toISOString(),
      trace_id: 'b'.repeat(32), trace_flags: '00', traceparent_inbound_valid: true,
    });
    expect(all.deliveries[1]).toMatchObject({ status: 'SUCCESS', response_status: 204, attempts: 1 });
    expect(all.deliveries[1]).not.toHaveProperty('owner');
    expect(all.deliveries[1]).not.toHaveProperty('tenant_id');

    expect(ids(json(await get(`${url}?status=FAILED`)).deliveries)).toEqual([written[3], written[1]]);
    const iso = (ms: number) => encodeURIComponent(new Date(ms).toISOString());
    expect(ids(json(await get(`${url}?from=${iso(base + 1000)}&to=${iso(base + 3000)}`)).deliveries)).toEqual([written[3], written[2], written[1]]);
    const { rows, pages } = await allPages(`${url}?limit=2`, 'deliveries');
    expect(ids(rows)).toEqual([retrying, ...[...written].reverse()]);
    expect(pages).toBe(3);
    expect(json(await get(`${url}?limit=2`)).next_cursor).toBe(written[4]);
  });

  it('bad status, from, to or cursor → 400; unknown subscription → 404 WEBHOOK_NOT_FOUND', async () => {
    const t = await createTenant(h, { budgets: [] });
    const sub = await subscription(t);
    const url = `/v1/admin/webhooks/${sub}/deliveries`;
    expect(expectError(await get(`${url}?status=DONE`), 400, 'INVALID_REQUEST').message).toContain('status');
    expect(expectError(await get(`${url}?from=nope`), 400, 'INVALID_REQUEST').message).toContain('from');
    expect(expectError(await get(`${url}?to=2026-01-01Tbad`), 400, 'INVALID_REQUEST').message).toContain('to');
    expectError(await get(`${url}?cursor=del_nope`), 400, 'INVALID_REQUEST');
    expectError(await get(`/v1/admin/webhooks/whsub_${t.id}_${hex(8)}/deliveries`), 404, 'WEBHOOK_NOT_FOUND');
    expectError(await get('/v1/admin/webhooks/not-a-subscription/deliveries'), 404, 'WEBHOOK_NOT_FOUND');
    expectError(await get(url, {}), 401, 'UNAUTHORIZED');
    expect(json(await get(url))).toEqual({ deliveries: [], has_more: false });
  });

  it('an expired delivery record (still indexed) is skipped', async () => {
    const t = await createTenant(h, { budgets: [] });
    const sub = await subscription(t);
    const kept = await writeDelivery(t.id, sub, Date.now() - 2000);
    const gone = await writeDelivery(t.id, sub, Date.now() - 1000);
    await h.system.redis.del(h.system.keys.delivery(t.id, gone));
    expect(ids(json(await get(`/v1/admin/webhooks/${sub}/deliveries`)).deliveries)).toEqual([kept]);
  });

  it('tenant path: webhooks:read on the owner’s key; another tenant’s subscription → 404; missing permission → 403; admin key allowed', async () => {
    const t = await createTenant(h, { budgets: [] });
    const other = await createTenant(h, { budgets: [] });
    const sub = await subscription(t);
    const theirSub = await subscription(other);
    const systemSub = await subscription(undefined);
    const d = await writeDelivery(t.id, sub, Date.now());
    await writeDelivery(other.id, theirSub, Date.now());
    const headers = { 'x-cycles-api-key': await keyWith(t, ['webhooks:read']) };
    const mine = json(await get(`/v1/webhooks/${sub}/deliveries`, headers));
    expect(ids(mine.deliveries)).toEqual([d]);
    expectError(await get(`/v1/webhooks/${theirSub}/deliveries`, headers), 404, 'WEBHOOK_NOT_FOUND');
    expectError(await get(`/v1/webhooks/${systemSub}/deliveries`, headers), 404, 'WEBHOOK_NOT_FOUND');
    expectError(await get(`/v1/webhooks/${sub}/deliveries`, { 'x-cycles-api-key': await keyWith(t, ['events:read']) }), 403, 'INSUFFICIENT_PERMISSIONS');
    expectError(await get(`/v1/webhooks/${sub}/deliveries?status=nope`, headers), 400, 'INVALID_REQUEST');
    expect(ids(json(await get(`/v1/webhooks/${theirSub}/deliveries`)).deliveries)).toHaveLength(1);
    expectError(await get(`/v1/webhooks/${sub}/deliveries`, { 'x-admin-api-key': 'wrong', ...headers }), 401, 'UNAUTHORIZED');
    expect(await h.admin.inject({ method: 'DELETE', url: `/v1/admin/webhooks/${systemSub}`, headers: ADMIN }).then((r) => r.statusCode)).toBe(204);
  });
});

describe('admin overview', () => {
  it('every required section, window 3600, counts from the registries, top lists ≤ 10, recent denials and expiries as events', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:prod', 1000], ['workspace:dev', 500, { unit: 'TOKENS' }]] });
    const suspended = await createTenant(h, { budgets: [] });
    expect((await h.admin.inject({ method: 'PATCH', url: `/v1/admin/tenants/${suspended.id}`, headers: ADMIN, payload: { status: 'SUSPENDED' } })).statusCode).toBe(200);
    const { redis, keys } = h.system;
    // Debt beyond the overdraft limit on one ledger, as an overage commit would leave it.
    await redis.hset(keys.budget(t.id, t.scope('workspace:prod'), USD), { debt: '70', spent: '1000', over_limit: '1' });
    const sub = await subscription(t);
    await redis.hset(keys.webhook(t.id, sub), { consecutive_failures: '3', last_failure_at: '2026-01-01T00:00:00.000Z' });
    const now = Date.now();
    const denials = [];
    for (let i = 0; i < 12; i += 1) {
      denials.push(await writeEvent({ tenant: t.id, type: 'reservation.denied', tsMs: now - 1000 + i, data: { reason_code: i % 3 === 0 ? 'BUDGET_FROZEN' : 'BUDGET_EXCEEDED' } }));
    }
    const expiry = await writeEvent({ tenant: t.id, type: 'reservation.expired', tsMs: now - 2000 });
    const stale = await writeEvent({ tenant: t.id, type: 'reservation.expired', tsMs: now - 2 * 3_600_000 });

    const res = await get('/v1/admin/overview');
    expect(res.statusCode, res.body).toBe(200);
    const o = json(res);
    for (const k of ['as_of', 'event_window_seconds', 'tenant_counts', 'budget_counts', 'over_limit_scopes', 'debt_scopes', 'webhook_counts',
      'failing_webhooks', 'event_counts', 'recent_denials', 'recent_expiries']) expect(o, k).toHaveProperty(k);
    expect(o.event_window_seconds).toBe(3600);
    expect(Date.parse(o.as_of)).toBeGreaterThanOrEqual(now - 1000);

    const tc = o.tenant_counts;
    expect(tc.total).toBe(tc.active + tc.suspended + tc.closed);
    expect(tc.suspended).toBeGreaterThanOrEqual(1);
    const bc = o.budget_counts;
    expect(bc.total).toBeGreaterThanOrEqual(3);
    expect(bc.total).toBe(Object.values(bc.by_unit as Record<string, number>).reduce((a, b) => a + b, 0));
    expect(bc.by_unit.TOKENS).toBeGreaterThanOrEqual(1);
    expect(bc.over_limit).toBeGreaterThanOrEqual(1);
    expect(bc.with_debt).toBeGreaterThanOrEqual(1);
    expect(o.over_limit_scopes).toContainEqual({ scope: t.scope('workspace:prod'), unit: USD, allocated: 1000, remaining: -70, debt: 70 });
    expect(o.debt_scopes).toContainEqual({ scope: t.scope('workspace:prod'), unit: USD, debt: 70, overdraft_limit: 0 });
    expect(o.webhook_counts.total).toBeGreaterThanOrEqual(1);
    expect(o.webhook_counts.with_failures).toBeGreaterThanOrEqual(1);
    expect(o.failing_webhooks).toContainEqual({ subscription_id: sub, url: 'https://hooks.example.com/in', consecutive_failures: 3, last_failure_at: '2026-01-01T00:00:00.000Z' });

    for (const k of ['over_limit_scopes', 'debt_scopes', 'failing_webhooks', 'recent_denials', 'recent_expiries']) expect(o[k].length, k).toBeLessThanOrEqual(10);
    expect(ids(o.recent_denials)).toEqual(ids(denials.slice(-10).reverse()));
    expect(o.recent_denials[0]).toEqual(denials[11]);
    expect(ids(o.recent_expiries)).toContain(expiry.event_id);
    expect(ids(o.recent_expiries)).not.toContain(stale.event_id);
    expect(o.event_counts.total_recent).toBeGreaterThanOrEqual(13);
    expect(o.event_counts.by_category.reservation).toBeGreaterThanOrEqual(13);
    expect(o.recent_denials_by_reason.BUDGET_FROZEN).toBeGreaterThanOrEqual(4);
    expect(o.recent_denials_by_reason.BUDGET_EXCEEDED).toBeGreaterThanOrEqual(8);
  });

  it('admin key only', async () => {
    const t = await createTenant(h, { budgets: [] });
    expectError(await get('/v1/admin/overview', {}), 401, 'UNAUTHORIZED');
    expectError(await get('/v1/admin/overview', { 'x-cycles-api-key': t.key }), 401, 'UNAUTHORIZED');
  });
});
