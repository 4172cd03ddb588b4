import { randomBytes } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newEventIdBase, shortOfReservationId } from '../src/domain/ids.js';
import { ADMIN_KEY, USD, createTenant, idem, json, sleep, startHarness, type Harness, type TestTenant } from './helpers.js';

/**
 * Tenant close cascade (admin digest §6, spec CASCADE SEMANTICS, ADR 0015): the flip, every
 * owned object driven to its terminal state with one *_via_tenant_cascade event each (read
 * straight from the tenant outbox: no relay runs here), the ledger after the close, idempotent
 * re-close, a cascade interrupted at several points and resumed, Rule 2 on every mutation.
 */

let h: Harness;
const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const OPEN = { blocked_cidr_ranges: [], allowed_url_patterns: [], allow_http: true };
const CASCADE_TYPES = [
  'budget.closed_via_tenant_cascade',
  'reservation.released_via_tenant_cascade',
  'api_key.revoked_via_tenant_cascade',
  'webhook.disabled_via_tenant_cascade',
];

beforeAll(async () => {
  // A prefix of its own: the webhook-security config is one key per deployment.
  h = await startHarness({ keyPrefix: `cytc-${randomBytes(4).toString('hex')}` });
  expect((await adm('PUT', '/v1/admin/config/webhook-security', OPEN)).statusCode).toBe(200);
});
afterAll(async () => h?.close());

type Method = 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';
function adm(method: Method, url: string, payload?: unknown, headers: Record<string, string> = ADMIN) {
  return h.admin.inject({ method, url, headers, ...(payload === undefined ? {} : { payload: payload as object }) });
}
const enc = encodeURIComponent;
const amt = (amount: number, unit = USD) => ({ unit, amount });

function expectStatus(res: LightMyRequestResponse, status: number, code?: string): any {
  expect(res.statusCode, res.body).toBe(status);
  const body = json(res);
  if (code !== undefined) expect(body.error, res.body).toBe(code);
  return body;
}

const close = (t: TestTenant) => adm('PATCH', `/v1/admin/tenants/${t.id}`, { status: 'CLOSED' });

async function outbox(tenantId: string): Promise<any[]> {
  const entries = await h.system.redis.xrange(h.system.keys.outbox(tenantId), '-', '+');
  return entries.map(([, fields]) => JSON.parse(fields[1]!));
}

async function cascadeEvents(tenantId: string): Promise<any[]> {
  return (await outbox(tenantId)).filter((e) => CASCADE_TYPES.includes(e.event_type));
}

function countByType(events: any[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const e of events) out[e.event_type] = (out[e.event_type] ?? 0) + 1;
  return out;
}

/** Every ledger of the tenant from the admin listing (the tenant key is revoked by the close). */
async function ledgers(t: TestTenant): Promise<Record<string, any>> {
  const res = await adm('GET', `/v1/admin/budgets?tenant_id=${t.id}&limit=100&sort_by=scope`);
  const body = expectStatus(res, 200);
  return Object.fromEntries((body.ledgers as any[]).map((l) => [l.scope, l]));
}

function invariant(l: any): boolean {
  return l.remaining.amount === l.allocated.amount - l.spent.amount - l.reserved.amount - l.debt.amount;
}

/** The stored record (ADR 0019), decoded; {} when there is none. */
async function reservation(t: TestTenant, rid: string): Promise<Record<string, string>> {
  return (await h.system.runtimeStore.getReservation(t.id, shortOfReservationId(rid)!)) ?? {};
}

async function webhook(t: TestTenant, extra: Record<string, unknown> = {}): Promise<string> {
  const res = await adm('POST', `/v1/admin/webhooks?tenant_id=${t.id}`, {
    name: 'hook', url: 'https://hooks.example.com/in', event_types: ['budget.funded'], ...extra,
  });
  return expectStatus(res, 201).subscription.subscription_id as string;
}

async function hookStatus(id: string): Promise<string> {
  return expectStatus(await adm('GET', `/v1/admin/webhooks/${id}`), 200).status;
}

async function apiKey(t: TestTenant, name = 'extra'): Promise<{ key_id: string; key_secret: string }> {
  return expectStatus(await adm('POST', '/v1/admin/api-keys', { tenant_id: t.id, name, permissions: ['budgets:read', 'balances:read'] }), 201);
}

async function keyRecord(keyId: string): Promise<Record<string, string>> {
  return h.system.redis.hgetall(h.system.keys.apiKey(keyId));
}

/** The runtime key of a TestTenant is cached for up to the auth TTL; revocation is pushed, so poll briefly. */
async function until<T>(probe: () => Promise<T>, done: (v: T) => boolean, attempts = 40): Promise<T> {
  let v = await probe();
  for (let i = 0; i < attempts && !done(v); i += 1) {
    await sleep(50);
    v = await probe();
  }
  return v;
}

/**
 * A tenant with every kind of owned object: tenant budget 1000 and workspace:prod 500 holding a
 * 100 reservation; workspace:cold 200 holding a 30 reservation and then FROZEN; a committed
 * reservation; the runtime key, a second ACTIVE key and one revoked before the close; an ACTIVE,
 * a PAUSED and an (auto-)DISABLED subscription.
 */
async function fullTenant() {
  const t = await createTenant(h, { budgets: [['', 1000], ['workspace:prod', 500], ['workspace:cold', 200]] });
  const live = await t.reserveOk(100);
  const cold = await t.reserveOk(30, { ws: 'cold' });
  const committed = await t.reserveOk(50);
  expect((await t.commit(committed, 40)).statusCode).toBe(200);
  expectStatus(await adm('POST', `/v1/admin/budgets/freeze?scope=${enc(t.scope('workspace:cold'))}&unit=${USD}`, {}), 200);
  const extra = await apiKey(t, 'second key');
  const revoked = await apiKey(t, 'revoked early');
  expectStatus(await adm('DELETE', `/v1/admin/api-keys/${revoked.key_id}?reason=rotated`), 200);
  const active = await webhook(t, { name: 'active hook' });
  const paused = await webhook(t, { name: 'paused hook' });
  expectStatus(await adm('PATCH', `/v1/admin/webhooks/${paused}`, { status: 'PAUSED' }), 200);
  const disabled = await webhook(t, { name: 'failing hook' });
  // What the delivery worker's auto-disable leaves behind.
  await h.system.redis.hset(h.system.keys.webhook(t.id, disabled), 'status', 'DISABLED');
  return { t, live, cold, committed, extra, revoked, active, paused, disabled };
}

describe('tenant close cascade', () => {
  it('closes every budget (holds returned), releases reservations, revokes keys, disables subscriptions; one event per child', async () => {
    const f = await fullTenant();
    const { t } = f;
    const runtimeKeyId = (await h.system.redis.smembers(h.system.keys.tenantKeys(t.id))).find((id) => ![f.extra.key_id, f.revoked.key_id].includes(id))!;
    const before = await ledgers(t);
    expect(before[t.scope()].reserved.amount).toBe(130 + 0);
    const outboxBefore = (await outbox(t.id)).length;

    const res = await close(t);
    const tenant = expectStatus(res, 200);
    expect(tenant.status).toBe('CLOSED');
    expect(typeof tenant.closed_at).toBe('string');
    expect(res.headers['x-cycles-cascade-status']).toBeUndefined();
    const requestId = String(res.headers['x-request-id']);
    const correlation = `tenant_close_cascade:${t.id}:${requestId}`;

    // Ledgers: every budget CLOSED, nothing held, the held amounts back in remaining.
    const after = await ledgers(t);
    for (const [scope, l] of Object.entries(after)) {
      expect(l.status, scope).toBe('CLOSED');
      expect(l.reserved.amount, scope).toBe(0);
      expect(invariant(l), scope).toBe(true);
      expect(l.remaining.amount, scope).toBe(before[scope].remaining.amount + before[scope].reserved.amount);
      expect(l.allocated).toEqual(before[scope].allocated);
      expect(l.spent).toEqual(before[scope].spent);
    }
    expect(after[t.scope()].remaining.amount).toBe(1000 - 40);
    expect(after[t.scope('workspace:prod')].remaining.amount).toBe(500 - 40);
    expect(after[t.scope('workspace:cold')].remaining.amount).toBe(200);
    expect(await h.system.redis.hget(h.system.keys.budget(t.id, t.scope('workspace:cold'), USD), 'closed_at')).toMatch(/^\d+$/);

    // Reservations: the ACTIVE ones RELEASED (reason tenant_closed), none left in the expiry index.
    for (const rid of [f.live, f.cold]) expect(await reservation(t, rid)).toMatchObject({ status: 'RELEASED', reason: 'tenant_closed' });
    expect((await reservation(t, f.committed)).status).toBe('COMMITTED');
    expect(await h.system.redis.zcard(h.system.keys.expiryIndex(t.id))).toBe(0);

    // Keys: the ACTIVE ones REVOKED with revoked_at and reason tenant_closed; the early one untouched.
    for (const id of [runtimeKeyId, f.extra.key_id]) {
      const k = await keyRecord(id);
      expect(k).toMatchObject({ status: 'REVOKED', revoked_reason: 'tenant_closed' });
      expect(Number.isNaN(Date.parse(k.revoked_at!))).toBe(false);
    }
    expect((await keyRecord(f.revoked.key_id)).revoked_reason).toBe('rotated');

    // Subscriptions: ACTIVE and PAUSED now DISABLED; the already-DISABLED one stays.
    for (const id of [f.active, f.paused, f.disabled]) expect(await hookStatus(id)).toBe('DISABLED');

    // Events: one per moved child, all with the cascade's correlation id and this request's ids.
    const fresh = (await outbox(t.id)).slice(outboxBefore);
    expect(countByType(fresh)).toEqual({
      'tenant.closed': 1,
      'reservation.released_via_tenant_cascade': 3,
      'budget.closed_via_tenant_cascade': 3,
      'webhook.disabled_via_tenant_cascade': 2,
      'api_key.revoked_via_tenant_cascade': 2,
    });
    for (const e of fresh) {
      expect(e.correlation_id, e.event_type).toBe(correlation);
      expect(e.request_id).toBe(requestId);
      expect(e.source).toBe('cycles-admin');
      if (e.event_type !== 'tenant.closed') expect(e.data.cascade_reason).toBe('tenant_closed');
    }
    const closed = fresh.find((e) => e.event_type === 'tenant.closed');
    expect(closed.data).toMatchObject({ tenant_id: t.id, previous_status: 'ACTIVE', new_status: 'CLOSED' });

    const prodLedgerId = before[t.scope('workspace:prod')].ledger_id;
    const coldLedgerId = before[t.scope('workspace:cold')].ledger_id;
    const byLedger = (type: string, id: string) => fresh.find((e) => e.event_type === type && e.data.ledger_id === id);
    expect(byLedger('budget.closed_via_tenant_cascade', coldLedgerId)).toMatchObject({
      category: 'budget',
      scope: t.scope('workspace:cold'),
      data: { ledger_id: coldLedgerId, scope: t.scope('workspace:cold'), unit: USD, prior_status: 'FROZEN', new_status: 'CLOSED', cascade_reason: 'tenant_closed' },
    });
    expect(byLedger('reservation.released_via_tenant_cascade', prodLedgerId)).toMatchObject({ category: 'reservation' });
    expect(byLedger('reservation.released_via_tenant_cascade', prodLedgerId).data).toEqual({
      ledger_id: prodLedgerId, scope: t.scope('workspace:prod'), unit: USD, prior_status: 'ACTIVE', released_amount: 100, cascade_reason: 'tenant_closed',
    });
    expect(byLedger('reservation.released_via_tenant_cascade', before[t.scope()].ledger_id).data.released_amount).toBe(130);
    expect(byLedger('reservation.released_via_tenant_cascade', coldLedgerId).data.released_amount).toBe(30);

    const hookEvents = fresh.filter((e) => e.event_type === 'webhook.disabled_via_tenant_cascade');
    expect(hookEvents.map((e) => e.data).sort((a, b) => a.name.localeCompare(b.name))).toEqual([
      { subscription_id: f.active, name: 'active hook', prior_status: 'ACTIVE', new_status: 'DISABLED', cascade_reason: 'tenant_closed' },
      { subscription_id: f.paused, name: 'paused hook', prior_status: 'PAUSED', new_status: 'DISABLED', cascade_reason: 'tenant_closed' },
    ].sort((a, b) => a.name.localeCompare(b.name)));
    expect(hookEvents.every((e) => e.category === 'webhook' && e.scope === undefined)).toBe(true);
    const keyEvent = fresh.find((e) => e.event_type === 'api_key.revoked_via_tenant_cascade' && e.data.key_id === f.extra.key_id);
    expect(keyEvent.data).toEqual({ key_id: f.extra.key_id, name: 'second key', prior_status: 'ACTIVE', new_status: 'REVOKED', cascade_reason: 'tenant_closed' });
    for (const e of fresh) {
      const ids = ['ledger_id', 'subscription_id', 'key_id'].filter((k) => e.data[k] !== undefined);
      if (e.event_type !== 'tenant.closed') expect(ids, e.event_type).toHaveLength(1);
    }

    // Audit: one tenant_close_cascade row per moved child (3 budgets, 2 subscriptions, 2 keys).
    const audit = expectStatus(await adm('GET', `/v1/admin/audit/logs?tenant_id=${t.id}&operation=tenant_close_cascade&limit=100`), 200).logs as any[];
    expect(audit.map((r) => r.resource_type).sort()).toEqual(['api_key', 'api_key', 'budget', 'budget', 'budget', 'webhook_subscription', 'webhook_subscription']);
    expect(audit.every((r) => r.request_id === requestId && r.metadata.correlation_id === correlation)).toBe(true);
    expect(audit.find((r) => r.resource_id === prodLedgerId).metadata).toMatchObject({
      event_kind: 'budget.closed_via_tenant_cascade', prior_status: 'ACTIVE', new_status: 'CLOSED', released_reserved_amount: 100,
    });

    // Cascade state: done, and the tenant is no longer pending.
    expect(await h.system.redis.hgetall(h.system.keys.cascadeState(t.id))).toMatchObject({ correlation_id: correlation, state: 'done' });
    expect(await h.system.redis.zscore(h.system.keys.cascadePending(), t.id)).toBeNull();
  });

  it('keys are rejected after the close: runtime 401, admin plane 403, validate says KEY_REVOKED', async () => {
    const t = await createTenant(h);
    const extra = await apiKey(t);
    expect((await t.reserve(10)).statusCode).toBe(200);
    expect((await adm('GET', `/v1/admin/budgets?limit=5`, undefined, { 'x-cycles-api-key': extra.key_secret })).statusCode).toBe(200);
    expectStatus(await close(t), 200);

    const runtime = await until(() => t.reserve(10), (r) => r.statusCode === 401);
    expectStatus(runtime, 401, 'UNAUTHORIZED');
    expectStatus(await until(() => t.get(`/v1/balances?tenant=${t.id}`), (r) => r.statusCode === 401), 401, 'UNAUTHORIZED');
    const adminPlane = await until(() => adm('GET', '/v1/admin/budgets?limit=5', undefined, { 'x-cycles-api-key': extra.key_secret }), (r) => r.statusCode === 403);
    expectStatus(adminPlane, 403, 'FORBIDDEN');
    const v = expectStatus(await adm('POST', '/v1/auth/validate', { key_secret: extra.key_secret }), 200);
    expect(v).toMatchObject({ valid: false, reason: 'KEY_REVOKED' });
  });

  it('re-closing a CLOSED tenant → 200, closed_at unchanged, no new events, no new audit rows', async () => {
    const f = await fullTenant();
    const first = expectStatus(await close(f.t), 200);
    const events = (await outbox(f.t.id)).length;
    const audit = async () => (expectStatus(await adm('GET', `/v1/admin/audit/logs?tenant_id=${f.t.id}&operation=tenant_close_cascade&limit=100`), 200).logs as any[]).length;
    const rows = await audit();
    const ledgersBefore = await ledgers(f.t);
    for (let i = 0; i < 2; i += 1) {
      const again = expectStatus(await close(f.t), 200);
      expect(again.status).toBe('CLOSED');
      expect(again.closed_at).toBe(first.closed_at);
    }
    expect((await outbox(f.t.id)).length).toBe(events);
    expect(await audit()).toBe(rows);
    expect(await ledgers(f.t)).toEqual(ledgersBefore);
  });

  it('two closes at once move each child once', async () => {
    const f = await fullTenant();
    const [a, b] = await Promise.all([close(f.t), close(f.t)]);
    expect([a.statusCode, b.statusCode]).toEqual([200, 200]);
    expect(countByType(await cascadeEvents(f.t.id))).toEqual({
      'reservation.released_via_tenant_cascade': 3,
      'budget.closed_via_tenant_cascade': 3,
      'webhook.disabled_via_tenant_cascade': 2,
      'api_key.revoked_via_tenant_cascade': 2,
    });
    expect((await outbox(f.t.id)).filter((e) => e.event_type === 'tenant.closed')).toHaveLength(1);
    for (const l of Object.values(await ledgers(f.t))) expect(l.reserved.amount).toBe(0);
  });

  it('an interrupted cascade (flip only, then one-child batches, then a key half done) is finished by a re-close without duplicates', async () => {
    const f = await fullTenant();
    const { t } = f;
    const before = await ledgers(t);
    const admin = { kind: 'admin' } as const;
    const flipCorr = { requestId: 'req-interrupted-close', traceId: 'a'.repeat(32) };
    const cascadeCorrelation = `tenant_close_cascade:${t.id}:${flipCorr.requestId}`;

    // 1. The flip alone, as if the process died right after it.
    await h.system.adminStore.markCascadePending(t.id, Date.now());
    const flip = await h.system.adminStore.updateTenant(t.id, 'CLOSED', new Date().toISOString(), {}, [], {
      eventIdBase: newEventIdBase(), requestId: flipCorr.requestId, traceId: flipCorr.traceId, actorJson: '{"type":"admin"}', correlationId: cascadeCorrelation,
    }, cascadeCorrelation);
    expect(flip.result).toBe('OK');
    expect(await h.system.redis.hgetall(h.system.keys.cascadeState(t.id))).toMatchObject({ correlation_id: cascadeCorrelation, state: 'running' });
    expect(await h.system.adminStore.pendingCascades(1000)).toContain(t.id);
    expect(await cascadeEvents(t.id)).toEqual([]);
    // Rule 2 is already in force, and reads show the children as they are (Mode B (d)).
    expectStatus(await adm('POST', `/v1/admin/budgets/fund?scope=${enc(t.scope('workspace:prod'))}&unit=${USD}&tenant_id=${t.id}`, { operation: 'CREDIT', amount: amt(1) }), 409, 'TENANT_CLOSED');
    expect((await ledgers(t))[t.scope('workspace:prod')]).toMatchObject({ status: 'ACTIVE', reserved: amt(100) });
    expect(await hookStatus(f.active)).toBe('ACTIVE');

    // 2. Batches of one child: the first releases one reservation (no event: the aggregate is per
    //    budget), and the ledgers stay consistent with what is still held.
    const resume = (requestId: string, opts: { batchSize?: number; maxBatches?: number }) =>
      h.system.admin.runCloseCascade(admin, t.id, { requestId, traceId: 'b'.repeat(32) }, opts);
    const r1 = await resume('req-resume-1', { batchSize: 1, maxBatches: 1 });
    expect(r1).toMatchObject({ complete: false, changes: [], correlationId: cascadeCorrelation });
    expect(await h.system.redis.zcard(h.system.keys.expiryIndex(t.id))).toBe(1);
    const mid = await ledgers(t);
    for (const l of Object.values(mid)) {
      expect(invariant(l)).toBe(true);
      expect(l.status).not.toBe('CLOSED');
    }
    expect(mid[t.scope()].reserved.amount).toBeLessThan(130);

    // 3. Three more one-child batches: the second reservation and two budgets.
    const r2 = await resume('req-resume-2', { batchSize: 1, maxBatches: 3 });
    expect(r2.complete).toBe(false);
    expect(r2.changes.map((c) => c.kind)).toEqual(['budget', 'budget']);
    const partial = await cascadeEvents(t.id);
    expect(countByType(partial)).toEqual({ 'budget.closed_via_tenant_cascade': 2, 'reservation.released_via_tenant_cascade': 2 });

    // 4. One key half done: claimed and revoked, but the finishing step (the event) never ran.
    const claim = await h.system.adminStore.cascadeKeyStep(t.id, 'claim', f.extra.key_id, 'ACTIVE', 'second key', {
      eventIdBase: newEventIdBase(), requestId: 'req-resume-3', traceId: 'c'.repeat(32), actorJson: '{"type":"admin"}',
    });
    expect(claim).toBe('CLAIMED');
    expect((await h.system.adminStore.cascadeRevokeKey(f.extra.key_id, t.id, new Date().toISOString(), 'tenant_closed')).result).toBe('OK');

    // 5. The operator re-closes: everything left is finished, nothing is emitted twice.
    const again = await close(t);
    expectStatus(again, 200);
    const events = await cascadeEvents(t.id);
    expect(countByType(events)).toEqual({
      'reservation.released_via_tenant_cascade': 3,
      'budget.closed_via_tenant_cascade': 3,
      'webhook.disabled_via_tenant_cascade': 2,
      'api_key.revoked_via_tenant_cascade': 2,
    });
    // Every child event names the close that started the cascade, whichever call did the work.
    expect(events.every((e) => e.correlation_id === cascadeCorrelation)).toBe(true);
    expect(new Set(events.map((e) => e.event_id)).size).toBe(events.length);
    expect((await outbox(t.id)).filter((e) => e.event_type === 'tenant.closed')).toHaveLength(1);
    const released = Object.fromEntries(events.filter((e) => e.event_type === 'reservation.released_via_tenant_cascade').map((e) => [e.data.scope, e.data.released_amount]));
    expect(released).toEqual({ [t.scope()]: 130, [t.scope('workspace:prod')]: 100, [t.scope('workspace:cold')]: 30 });
    const after = await ledgers(t);
    for (const [scope, l] of Object.entries(after)) {
      expect(l).toMatchObject({ status: 'CLOSED', reserved: amt(0) });
      expect(invariant(l)).toBe(true);
      expect(l.remaining.amount).toBe(before[scope].remaining.amount + before[scope].reserved.amount);
    }
    for (const id of [f.active, f.paused]) expect(await hookStatus(id)).toBe('DISABLED');
    expect(await h.system.redis.hget(h.system.keys.cascadeKeys(t.id), f.extra.key_id)).toBe('done');
    expect(await h.system.redis.hget(h.system.keys.cascadeState(t.id), 'state')).toBe('done');
    expect(await h.system.adminStore.pendingCascades(1000)).not.toContain(t.id);
    expect(await h.system.redis.exists(h.system.keys.cascadeReleased(t.id))).toBe(0);

    // And a further run finds nothing to do.
    expect(await resume('req-resume-4', {})).toMatchObject({ complete: true, changes: [] });
    expect((await cascadeEvents(t.id)).length).toBe(events.length);
  });

  it('the expiry sweep and the cascade never return one hold twice', async () => {
    const t = await createTenant(h, { budgets: [['', 1000]] });
    const short = await t.reserveOk(70, { ttl_ms: 1000, grace_period_ms: 0 });
    await t.reserveOk(20);
    // Flip only; the short reservation then expires through the sweep before the cascade runs.
    const corr = `tenant_close_cascade:${t.id}:req-sweep`;
    await h.system.adminStore.updateTenant(t.id, 'CLOSED', new Date().toISOString(), {}, [], {
      eventIdBase: newEventIdBase(), requestId: 'req-sweep', traceId: 'd'.repeat(32), actorJson: '{"type":"admin"}', correlationId: corr,
    }, corr);
    await sleep(1100);
    await h.system.sweep.sweepOnce();
    expect((await reservation(t, short)).status).toBe('EXPIRED');
    expect((await ledgers(t))[t.scope()].reserved.amount).toBe(20);

    expectStatus(await close(t), 200);
    const l = (await ledgers(t))[t.scope()];
    expect(l).toMatchObject({ status: 'CLOSED', reserved: amt(0), remaining: amt(1000) });
    const released = (await cascadeEvents(t.id)).filter((e) => e.event_type === 'reservation.released_via_tenant_cascade');
    expect(released.map((e) => e.data.released_amount)).toEqual([20]);
    // A later sweep has nothing left to expire on the closed ledgers.
    await h.system.sweep.sweepOnce();
    expect((await ledgers(t))[t.scope()]).toEqual(l);
  });

  it('after the close every mutation of the tenant\'s objects → 409 TENANT_CLOSED, nothing changes, GETs still 200', async () => {
    const t = await createTenant(h);
    const hook = await webhook(t);
    const key = await apiKey(t);
    const policy = expectStatus(await adm('POST', '/v1/admin/policies', { tenant_id: t.id, name: 'p', scope_pattern: `${t.scope()}/*` }), 201);
    expectStatus(await close(t), 200);
    const budgetsBefore = await ledgers(t);
    const q = `scope=${enc(t.scope('workspace:prod'))}&unit=${USD}`;
    const closed = (res: LightMyRequestResponse) => expectStatus(res, 409, 'TENANT_CLOSED');

    closed(await adm('POST', `/v1/admin/budgets/fund?${q}&tenant_id=${t.id}`, { operation: 'CREDIT', amount: amt(10) }));
    closed(await adm('POST', `/v1/admin/budgets/freeze?${q}`, {}));
    closed(await adm('POST', `/v1/admin/budgets/unfreeze?${q}`, {}));
    closed(await adm('PATCH', `/v1/admin/budgets?${q}`, { overdraft_limit: amt(5) }));
    closed(await adm('POST', '/v1/admin/budgets', { tenant_id: t.id, scope: t.scope('workspace:late'), unit: USD, allocated: amt(1) }));
    closed(await adm('POST', '/v1/admin/api-keys', { tenant_id: t.id, name: 'late key' }));
    closed(await adm('PATCH', `/v1/admin/api-keys/${key.key_id}`, { name: 'renamed' }));
    closed(await adm('DELETE', `/v1/admin/api-keys/${key.key_id}`));
    closed(await adm('POST', `/v1/admin/webhooks?tenant_id=${t.id}`, { url: 'https://hooks.example.com/late', event_types: ['budget.funded'] }));
    closed(await adm('PATCH', `/v1/admin/webhooks/${hook}`, { name: 'renamed' }));
    // DISABLED by the cascade, and effectively terminal: re-enabling is refused (AD-118).
    closed(await adm('PATCH', `/v1/admin/webhooks/${hook}`, { status: 'ACTIVE' }));
    closed(await adm('DELETE', `/v1/admin/webhooks/${hook}`));
    closed(await adm('POST', '/v1/admin/policies', { tenant_id: t.id, name: 'late', scope_pattern: `${t.scope()}/*` }));
    closed(await adm('PATCH', `/v1/admin/policies/${policy.policy_id}`, { description: 'late' }));
    const bulk = expectStatus(await adm('POST', '/v1/admin/budgets/bulk-action', { filter: { tenant_id: t.id }, action: 'CREDIT', amount: amt(1), idempotency_key: idem('b') }), 200);
    expect(bulk.failed.map((r: any) => r.error_code)).toEqual(['TENANT_CLOSED', 'TENANT_CLOSED']);
    // A status change out of CLOSED stays a 400 (no re-open).
    expectStatus(await adm('PATCH', `/v1/admin/tenants/${t.id}`, { status: 'ACTIVE' }), 400, 'INVALID_REQUEST');

    expect(await ledgers(t)).toEqual(budgetsBefore);
    expect(await hookStatus(hook)).toBe('DISABLED');
    expect((await keyRecord(key.key_id)).name).toBe('extra');
    expectStatus(await adm('GET', `/v1/admin/tenants/${t.id}`), 200);
    expectStatus(await adm('GET', `/v1/admin/budgets/lookup?${q}`), 200);
    expectStatus(await adm('GET', `/v1/admin/webhooks/${hook}`), 200);
    expectStatus(await adm('GET', `/v1/admin/api-keys?tenant_id=${t.id}`), 200);
    expectStatus(await adm('GET', `/v1/admin/policies?tenant_id=${t.id}`), 200);
    expectStatus(await adm('GET', `/v1/admin/audit/logs?tenant_id=${t.id}`), 200);
  });

  it('bulk CLOSE runs the cascade: children carry the cascade id, tenant.closed the bulk id; a re-close fixes stragglers or skips', async () => {
    const tag = idem('tag');
    const t = await createTenant(h, { budgets: [['', 100]] });
    expectStatus(await adm('PATCH', `/v1/admin/tenants/${t.id}`, { name: `${tag} ${t.id}` }), 200);
    await t.reserveOk(25);
    const hook = await webhook(t);
    const res = await adm('POST', '/v1/admin/tenants/bulk-action', { filter: { search: tag }, action: 'CLOSE', expected_count: 1, idempotency_key: idem('t') });
    const body = expectStatus(res, 200);
    expect(body.succeeded).toEqual([{ id: t.id }]);
    const requestId = String(res.headers['x-request-id']);
    const events = await outbox(t.id);
    expect(events.find((e) => e.event_type === 'tenant.closed').correlation_id).toBe(`tenant_bulk_action:close:${requestId}`);
    const children = events.filter((e) => CASCADE_TYPES.includes(e.event_type));
    expect(countByType(children)).toEqual({
      'reservation.released_via_tenant_cascade': 1,
      'budget.closed_via_tenant_cascade': 1,
      'webhook.disabled_via_tenant_cascade': 1,
      'api_key.revoked_via_tenant_cascade': 1,
    });
    expect(children.every((e) => e.correlation_id === `tenant_close_cascade:${t.id}:${requestId}`)).toBe(true);
    const rows = expectStatus(await adm('GET', `/v1/admin/audit/logs?tenant_id=${t.id}&operation=tenant_close_cascade&limit=100`), 200).logs;
    expect(rows).toHaveLength(3);

    // Nothing left: the row is skipped.
    const again = expectStatus(await adm('POST', '/v1/admin/tenants/bulk-action', { filter: { search: tag }, action: 'CLOSE', idempotency_key: idem('t') }), 200);
    expect(again.skipped).toEqual([{ id: t.id, reason: 'ALREADY_IN_TARGET_STATE' }]);
    // A straggler (a subscription left ACTIVE): the re-close moves it and the row succeeds.
    await h.system.redis.hset(h.system.keys.webhook(t.id, hook), 'status', 'ACTIVE');
    const fix = expectStatus(await adm('POST', '/v1/admin/tenants/bulk-action', { filter: { search: tag }, action: 'CLOSE', idempotency_key: idem('t') }), 200);
    expect(fix.succeeded).toEqual([{ id: t.id }]);
    expect(await hookStatus(hook)).toBe('DISABLED');
    expect((await cascadeEvents(t.id)).filter((e) => e.event_type === 'webhook.disabled_via_tenant_cascade')).toHaveLength(2);
  });

  it('closing an unknown tenant → 404 and leaves no cascade trace', async () => {
    const ghost = `ghost-${randomBytes(4).toString('hex')}`;
    expectStatus(await adm('PATCH', `/v1/admin/tenants/${ghost}`, { status: 'CLOSED' }), 404, 'TENANT_NOT_FOUND');
    expect(await h.system.redis.exists(h.system.keys.cascadeState(ghost))).toBe(0);
    expect(await h.system.redis.zscore(h.system.keys.cascadePending(), ghost)).toBeNull();
  });

  it('a CLOSED tenant closed before the cascade existed gets its cascade on the next close', async () => {
    const t = await createTenant(h, { budgets: [['', 100]] });
    // A legacy close: the status alone, no cascade state.
    await h.system.redis.hset(h.system.keys.tenant(t.id), 'status', 'CLOSED', 'closed_at', new Date().toISOString());
    const res = await close(t);
    expectStatus(res, 200);
    const events = await cascadeEvents(t.id);
    expect(countByType(events)).toEqual({ 'budget.closed_via_tenant_cascade': 1, 'api_key.revoked_via_tenant_cascade': 1 });
    expect(events.every((e) => e.correlation_id === `tenant_close_cascade:${t.id}:${res.headers['x-request-id']}`)).toBe(true);
    expect((await outbox(t.id)).filter((e) => e.event_type === 'tenant.closed')).toHaveLength(0);
  });
});
