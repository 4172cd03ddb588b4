import { randomBytes } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, createTenant, idem, json, startHarness, type Harness, type TestTenant } from './helpers.js';

/**
 * POST /v1/admin/webhooks/bulk-action (admin digest §2.11, spec bulkActionWebhooks): the order of
 * checks, filters, the 500-row cap, expected_count, idempotent replay, per-row outcomes, one
 * webhook.paused / resumed / deleted event per mutated row with the bulk correlation id, the
 * closed-owner guard and the one audit row.
 */

let h: Harness;
const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const OPEN = { blocked_cidr_ranges: [], allowed_url_patterns: [], allow_http: true };

beforeAll(async () => {
  // A prefix of its own: the webhook-security config is one key per deployment.
  h = await startHarness({ keyPrefix: `cywb-${randomBytes(4).toString('hex')}` });
  expect((await adm('PUT', '/v1/admin/config/webhook-security', OPEN)).statusCode).toBe(200);
});
afterAll(async () => h?.close());

type Method = 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';
function adm(method: Method, url: string, payload?: unknown) {
  return h.admin.inject({ method, url, headers: ADMIN, ...(payload === undefined ? {} : { payload: payload as object }) });
}
const bulk = (body: Record<string, unknown>) => adm('POST', '/v1/admin/webhooks/bulk-action', { idempotency_key: idem('wb'), ...body });

function expectStatus(res: LightMyRequestResponse, status: number, code?: string): any {
  expect(res.statusCode, res.body).toBe(status);
  const body = json(res);
  if (code !== undefined) {
    expect(body.error, res.body).toBe(code);
    expect(body.request_id).toBe(res.headers['x-request-id']);
  }
  return body;
}

async function hook(t: TestTenant | undefined, extra: Record<string, unknown> = {}): Promise<string> {
  const res = await adm('POST', `/v1/admin/webhooks${t ? `?tenant_id=${t.id}` : ''}`, {
    name: 'hook', url: `https://hooks.example.com/${idem('p')}`, event_types: ['budget.funded'], ...extra,
  });
  return expectStatus(res, 201).subscription.subscription_id as string;
}

async function sub(id: string): Promise<any> {
  return expectStatus(await adm('GET', `/v1/admin/webhooks/${id}`), 200);
}

async function statuses(ids: string[]): Promise<string[]> {
  return Promise.all(ids.map(async (id) => (await sub(id)).status));
}

async function outbox(ownerId: string): Promise<any[]> {
  const entries = await h.system.redis.xrange(h.system.keys.outbox(ownerId), '-', '+');
  return entries.map(([, fields]) => JSON.parse(fields[1]!));
}

async function webhookEvents(ownerId: string, correlation?: string): Promise<any[]> {
  return (await outbox(ownerId)).filter((e) => e.category === 'webhook' && (correlation === undefined || e.correlation_id === correlation));
}

/** A tenant with an ACTIVE, a PAUSED and an (auto-)DISABLED subscription. */
async function threeHooks() {
  const t = await createTenant(h, { budgets: [] });
  const active = await hook(t, { name: 'a' });
  const paused = await hook(t, { name: 'p' });
  expectStatus(await adm('PATCH', `/v1/admin/webhooks/${paused}`, { status: 'PAUSED' }), 200);
  const disabled = await hook(t, { name: 'd' });
  // What the delivery worker's auto-disable leaves behind.
  await h.system.redis.hset(h.system.keys.webhook(t.id, disabled), 'status', 'DISABLED', 'consecutive_failures', '10');
  return { t, active, paused, disabled };
}

const sortRows = (rows: any[]) => [...rows].sort((a, b) => a.id.localeCompare(b.id));

describe('POST /v1/admin/webhooks/bulk-action', () => {
  it('refuses an empty filter, a blank one, unknown properties, a bad action, event type or search, a missing key; nothing changes', async () => {
    const { t, active, paused, disabled } = await threeHooks();
    expectStatus(await bulk({ filter: {}, action: 'PAUSE' }), 400, 'INVALID_REQUEST');
    expectStatus(await bulk({ filter: { tenant_id: '  ' }, action: 'PAUSE' }), 400, 'INVALID_REQUEST');
    expectStatus(await bulk({ filter: { tenant_id: t.id, url: 'x' }, action: 'PAUSE' }), 400, 'INVALID_REQUEST');
    expectStatus(await bulk({ filter: { tenant_id: t.id }, action: 'DISABLE' }), 400, 'INVALID_REQUEST');
    expectStatus(await bulk({ filter: { tenant_id: t.id, status: 'GONE' }, action: 'PAUSE' }), 400, 'INVALID_REQUEST');
    expectStatus(await bulk({ filter: { tenant_id: t.id, event_type: 'budget.nope' }, action: 'PAUSE' }), 400, 'INVALID_REQUEST');
    expectStatus(await bulk({ filter: { tenant_id: t.id, search: 'x'.repeat(129) }, action: 'PAUSE' }), 400, 'INVALID_REQUEST');
    expectStatus(await adm('POST', '/v1/admin/webhooks/bulk-action', { filter: { tenant_id: t.id }, action: 'PAUSE' }), 400, 'INVALID_REQUEST');
    expectStatus(await bulk({ filter: { tenant_id: t.id }, action: 'PAUSE', idempotency_key: 'k'.repeat(129) }), 400, 'INVALID_REQUEST');
    const tenantKey = await adm('POST', '/v1/admin/api-keys', { tenant_id: t.id, name: 'k', permissions: ['webhooks:write'] });
    const asTenant = await h.admin.inject({
      method: 'POST', url: '/v1/admin/webhooks/bulk-action', headers: { 'x-cycles-api-key': json(tenantKey).key_secret },
      payload: { filter: { tenant_id: t.id }, action: 'PAUSE', idempotency_key: idem('wb') },
    });
    expectStatus(asTenant, 401, 'UNAUTHORIZED');
    expect(await statuses([active, paused, disabled])).toEqual(['ACTIVE', 'PAUSED', 'DISABLED']);
    // Only the setup's events: three webhook.created and one webhook.paused.
    expect((await webhookEvents(t.id)).map((e) => e.event_type).sort()).toEqual(['webhook.created', 'webhook.created', 'webhook.created', 'webhook.paused']);
  });

  it('PAUSE: ACTIVE → PAUSED succeeded; PAUSED and DISABLED skipped ALREADY_IN_TARGET_STATE; one webhook.paused per success; one audit row', async () => {
    const { t, active, paused, disabled } = await threeHooks();
    const key = idem('wb');
    const res = await bulk({ filter: { tenant_id: t.id }, action: 'PAUSE', expected_count: 3, idempotency_key: key });
    const body = expectStatus(res, 200);
    expect(body).toEqual({
      action: 'PAUSE',
      total_matched: 3,
      succeeded: [{ id: active }],
      failed: [],
      skipped: sortRows([{ id: paused, reason: 'ALREADY_IN_TARGET_STATE' }, { id: disabled, reason: 'ALREADY_IN_TARGET_STATE' }]),
      idempotency_key: key,
    });
    expect(await statuses([active, paused, disabled])).toEqual(['PAUSED', 'PAUSED', 'DISABLED']);

    const requestId = String(res.headers['x-request-id']);
    const correlation = `webhook_bulk_action:pause:${requestId}`;
    const events = await webhookEvents(t.id, correlation);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      event_type: 'webhook.paused', category: 'webhook', tenant_id: t.id, request_id: requestId, source: 'cycles-admin',
      data: { subscription_id: active, tenant_id: t.id, previous_status: 'ACTIVE', new_status: 'PAUSED', changed_fields: [] },
    });
    expect(events[0].scope).toBeUndefined();

    const audit = expectStatus(await adm('GET', `/v1/admin/audit/logs?tenant_id=${t.id}&operation=bulkActionWebhooks&limit=10`), 200).logs;
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ resource_type: 'webhook', resource_id: 'bulk-action', status: 200, request_id: requestId });
    expect(audit[0].metadata).toMatchObject({ action: 'PAUSE', total_matched: 3, succeeded: 1, failed: 0, skipped: 2 });
  });

  it('RESUME: PAUSED → ACTIVE (failures reset); ACTIVE skipped; DISABLED failed INVALID_TRANSITION (AD-101)', async () => {
    const { t, active, paused, disabled } = await threeHooks();
    await h.system.redis.hset(h.system.keys.webhook(t.id, paused), 'consecutive_failures', '3');
    const res = await bulk({ filter: { tenant_id: t.id }, action: 'RESUME' });
    const body = expectStatus(res, 200);
    expect(body.succeeded).toEqual([{ id: paused }]);
    expect(body.skipped).toEqual([{ id: active, reason: 'ALREADY_IN_TARGET_STATE' }]);
    expect(body.failed).toEqual([{ id: disabled, error_code: 'INVALID_TRANSITION', message: 'Cannot resume DISABLED subscription' }]);
    expect(await statuses([active, paused, disabled])).toEqual(['ACTIVE', 'ACTIVE', 'DISABLED']);
    expect((await sub(paused)).consecutive_failures).toBe(0);
    expect((await sub(disabled)).consecutive_failures).toBe(10);
    const events = await webhookEvents(t.id, `webhook_bulk_action:resume:${res.headers['x-request-id']}`);
    expect(events.map((e) => [e.event_type, e.data.subscription_id, e.data.previous_status, e.data.new_status])).toEqual([
      ['webhook.resumed', paused, 'PAUSED', 'ACTIVE'],
    ]);

    // The AD-101 shapes: status-filtered RESUME over DISABLED and PAUSE over PAUSED.
    const r = expectStatus(await bulk({ filter: { tenant_id: t.id, status: 'DISABLED' }, action: 'RESUME' }), 200);
    expect(r.failed.map((x: any) => [x.id, x.error_code])).toEqual([[disabled, 'INVALID_TRANSITION']]);
    expectStatus(await adm('PATCH', `/v1/admin/webhooks/${paused}`, { status: 'PAUSED' }), 200);
    const p = expectStatus(await bulk({ filter: { tenant_id: t.id, status: 'PAUSED' }, action: 'PAUSE' }), 200);
    expect(p).toMatchObject({ total_matched: 1, succeeded: [], failed: [], skipped: [{ id: paused, reason: 'ALREADY_IN_TARGET_STATE' }] });
  });

  it('RESUME of a tenant-owned row whose stored selectors are admin-only fails INVALID_TRANSITION and stays PAUSED', async () => {
    const { t, paused } = await threeHooks();
    // A legacy row that predates INVARIANT 2.
    await h.system.redis.hset(h.system.keys.webhook(t.id, paused), 'event_types', JSON.stringify(['api_key.created']));
    const body = expectStatus(await bulk({ filter: { tenant_id: t.id, status: 'PAUSED' }, action: 'RESUME' }), 200);
    expect(body.failed.map((x: any) => [x.id, x.error_code])).toEqual([[paused, 'INVALID_TRANSITION']]);
    expect((await sub(paused)).status).toBe('PAUSED');
  });

  it('DELETE removes every matched row with one webhook.deleted each; a later DELETE matches nothing', async () => {
    const { t, active, paused, disabled } = await threeHooks();
    const res = await bulk({ filter: { tenant_id: t.id }, action: 'DELETE', expected_count: 3 });
    const body = expectStatus(res, 200);
    expect(sortRows(body.succeeded)).toEqual(sortRows([{ id: active }, { id: paused }, { id: disabled }]));
    for (const id of [active, paused, disabled]) expectStatus(await adm('GET', `/v1/admin/webhooks/${id}`), 404, 'WEBHOOK_NOT_FOUND');
    expect(await h.system.redis.zrange(h.system.keys.webhookIndex(t.id), 0, -1)).toEqual([]);
    expect(await h.system.redis.zscore(h.system.keys.webhookRegistry(), active)).toBeNull();
    const events = await webhookEvents(t.id, `webhook_bulk_action:delete:${res.headers['x-request-id']}`);
    expect(events.map((e) => [e.event_type, e.data.subscription_id, e.data.previous_status]).sort()).toEqual([
      ['webhook.deleted', active, 'ACTIVE'], ['webhook.deleted', disabled, 'DISABLED'], ['webhook.deleted', paused, 'PAUSED'],
    ].sort());
    expect(events.every((e) => e.data.new_status === undefined)).toBe(true);
    const again = expectStatus(await bulk({ filter: { tenant_id: t.id }, action: 'DELETE' }), 200);
    expect(again).toMatchObject({ total_matched: 0, succeeded: [], failed: [], skipped: [] });
  });

  it('a wrong expected_count is 409 COUNT_MISMATCH with details.total_matched, nothing changes, and the key can be retried', async () => {
    const { t, active, paused, disabled } = await threeHooks();
    const key = idem('wb');
    const res = await bulk({ filter: { tenant_id: t.id }, action: 'PAUSE', expected_count: 2, idempotency_key: key });
    expect(expectStatus(res, 409, 'COUNT_MISMATCH').details).toEqual({ total_matched: 3 });
    expect(await statuses([active, paused, disabled])).toEqual(['ACTIVE', 'PAUSED', 'DISABLED']);
    expect(await webhookEvents(t.id, `webhook_bulk_action:pause:${res.headers['x-request-id']}`)).toEqual([]);
    const retry = expectStatus(await bulk({ filter: { tenant_id: t.id }, action: 'PAUSE', expected_count: 3, idempotency_key: key }), 200);
    expect(retry.succeeded).toEqual([{ id: active }]);
  });

  it('the same key and body within the window replays the first response and applies nothing; another body is 409 IDEMPOTENCY_MISMATCH', async () => {
    const { t, active } = await threeHooks();
    const body = { filter: { tenant_id: t.id }, action: 'PAUSE', idempotency_key: idem('wb') };
    const first = await bulk(body);
    expectStatus(first, 200);
    expectStatus(await adm('PATCH', `/v1/admin/webhooks/${active}`, { status: 'ACTIVE' }), 200);
    const replay = await bulk(body);
    expect(expectStatus(replay, 200)).toEqual(json(first));
    expect((await sub(active)).status).toBe('ACTIVE');
    expect((await webhookEvents(t.id)).filter((e) => e.event_type === 'webhook.paused' && e.data.subscription_id === active)).toHaveLength(1);
    expectStatus(await bulk({ ...body, action: 'RESUME' }), 409, 'IDEMPOTENCY_MISMATCH');
    expectStatus(await bulk({ ...body, filter: { tenant_id: t.id, status: 'ACTIVE' } }), 409, 'IDEMPOTENCY_MISMATCH');
    expect((await sub(active)).status).toBe('ACTIVE');
  });

  it('filters combine with AND: status, event_type (types only), search over id and url, across owners without tenant_id', async () => {
    const token = idem('tok').toLowerCase();
    const t = await createTenant(h, { budgets: [] });
    const o = await createTenant(h, { budgets: [] });
    const funded = await hook(t, { url: `https://hooks.example.com/${token}/a`, event_types: ['budget.funded'] });
    const created = await hook(t, { url: `https://hooks.example.com/${token}/b`, event_types: ['budget.created'] });
    const other = await hook(o, { url: `https://hooks.example.com/${token.toUpperCase()}/c`, event_types: ['budget.funded'] });
    const system = await hook(undefined, { url: `https://hooks.example.com/${token}/sys`, event_types: ['api_key.created'] });
    const unrelated = await hook(t, { event_types: ['budget.funded'] });

    const byType = expectStatus(await bulk({ filter: { tenant_id: t.id, event_type: 'budget.funded' }, action: 'PAUSE' }), 200);
    expect(sortRows(byType.succeeded)).toEqual(sortRows([{ id: funded }, { id: unrelated }]));

    const everywhereRes = await bulk({ filter: { search: `  ${token.toUpperCase()} ` }, action: 'PAUSE' });
    const everywhere = expectStatus(everywhereRes, 200);
    expect(everywhere.total_matched).toBe(4);
    expect(sortRows(everywhere.succeeded)).toEqual(sortRows([{ id: created }, { id: other }, { id: system }]));
    expect(everywhere.skipped).toEqual([{ id: funded, reason: 'ALREADY_IN_TARGET_STATE' }]);
    // Each row's event goes to its owner's outbox, the system row's to __system__.
    const correlation = `webhook_bulk_action:pause:${everywhereRes.headers['x-request-id']}`;
    expect((await webhookEvents('__system__', correlation)).map((e) => e.data.subscription_id)).toEqual([system]);
    expect((await webhookEvents(o.id, correlation)).map((e) => e.data.subscription_id)).toEqual([other]);
    expect((await webhookEvents(t.id, correlation)).map((e) => e.data.subscription_id)).toEqual([created]);

    const byId = expectStatus(await bulk({ filter: { search: other.slice(-10) }, action: 'RESUME' }), 200);
    expect(byId.succeeded).toEqual([{ id: other }]);
    const activeOnly = expectStatus(await bulk({ filter: { search: token, status: 'ACTIVE' }, action: 'RESUME' }), 200);
    expect(activeOnly).toMatchObject({ total_matched: 1, skipped: [{ id: other, reason: 'ALREADY_IN_TARGET_STATE' }] });
    const ghost = expectStatus(await bulk({ filter: { tenant_id: 'no-such-tenant-wb' }, action: 'DELETE' }), 200);
    expect(ghost.total_matched).toBe(0);
  });

  it('rows of a CLOSED owner fail TENANT_CLOSED whatever their own status; nothing is deleted', async () => {
    const { t, active, paused, disabled } = await threeHooks();
    expectStatus(await adm('PATCH', `/v1/admin/tenants/${t.id}`, { status: 'CLOSED' }), 200);
    const events = (await outbox(t.id)).length;
    for (const action of ['PAUSE', 'RESUME', 'DELETE']) {
      const body = expectStatus(await bulk({ filter: { tenant_id: t.id }, action }), 200);
      expect(body.total_matched).toBe(3);
      expect(sortRows(body.failed).map((r: any) => [r.id, r.error_code])).toEqual(sortRows([{ id: active }, { id: paused }, { id: disabled }]).map((r) => [r.id, 'TENANT_CLOSED']));
      expect(body.succeeded).toEqual([]);
    }
    expect(await statuses([active, paused, disabled])).toEqual(['DISABLED', 'DISABLED', 'DISABLED']);
    expect((await outbox(t.id)).length).toBe(events);
  });

  it('more than 500 matches is 400 LIMIT_EXCEEDED with the exact details.total_matched; nothing changes', async () => {
    const t = await createTenant(h, { budgets: [] });
    const ids: string[] = [];
    for (let i = 0; i < 501; i += 50) {
      ids.push(...(await Promise.all(Array.from({ length: Math.min(50, 501 - i) }, () => hook(t)))));
    }
    expect(ids).toHaveLength(501);
    const res = await bulk({ filter: { tenant_id: t.id }, action: 'PAUSE' });
    expect(expectStatus(res, 400, 'LIMIT_EXCEEDED').details).toEqual({ total_matched: 501 });
    expect(new Set(await statuses(ids.slice(0, 20)))).toEqual(new Set(['ACTIVE']));
    expect((await webhookEvents(t.id)).filter((e) => e.event_type === 'webhook.paused')).toHaveLength(0);
    // Exactly at the cap is fine.
    expectStatus(await bulk({ filter: { tenant_id: t.id, search: 'nothing-matches-this' }, action: 'PAUSE' }), 200);
    await adm('DELETE', `/v1/admin/webhooks/${ids[0]}`);
    const capped = expectStatus(await bulk({ filter: { tenant_id: t.id }, action: 'PAUSE', expected_count: 500 }), 200);
    expect(capped.succeeded).toHaveLength(500);
  }, 60_000);
});
