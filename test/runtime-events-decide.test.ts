import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, USD, createTenant, idem, json, startHarness, expectError, nums, expectInvariant, ledger, type Harness, type TestTenant } from './helpers.js';

/**
 * POST /v1/events (direct debit; runtime digest §2.9) under all three overage policies, and
 * POST /v1/decide (§2.7): budget states are 200 DENY, never 409, and nothing is persisted.
 */

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ keyPrefix: `cyt-evdec-${randomBytes(4).toString('hex')}` });
});
afterAll(async () => h?.close());

const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const OD = 'ALLOW_WITH_OVERDRAFT';

async function bal(t: TestTenant, rel = '') {
  return nums(await t.balance(rel));
}

const q = (t: TestTenant, rel: string) => `scope=${encodeURIComponent(t.scope(rel))}&unit=${USD}`;

async function freeze(t: TestTenant, rel: string) {
  const r = await h.admin.inject({ method: 'POST', url: `/v1/admin/budgets/freeze?${q(t, rel)}`, headers: ADMIN, payload: {} });
  expect(r.statusCode, r.body).toBe(200);
}

/** Fixture-only ledger states (digest §9): a direct write to the real store. */
async function fixture(t: TestTenant, rel: string, fields: Record<string, string>) {
  await h.system.redis.hset(h.system.keys.budget(t.id, t.scope(rel), USD), fields);
}

function event(t: TestTenant, amount: number, over: Record<string, unknown> = {}) {
  return t.post('/v1/events', t.eventBody(amount, over));
}

function decide(t: TestTenant, amount: number, over: Record<string, unknown> = {}) {
  return t.post('/v1/decide', t.decideBody(amount, over));
}

describe('events: direct debit', () => {
  it('201 APPLIED with an event_id; spent +A and remaining −A on each scope, reserved untouched', async () => {
    const t = await createTenant(h);
    await t.reserveOk(1000);
    const res = await event(t, 250);
    expect(res.statusCode, res.body).toBe(201);
    const b = json(res);
    expect(Object.keys(b).sort()).toEqual(['event_id', 'status']);
    expect(b.status).toBe('APPLIED');
    expect(typeof b.event_id).toBe('string');
    expect(b.event_id.length).toBeGreaterThan(0);
    expect(await bal(t, 'workspace:prod')).toEqual({ allocated: 100_000, remaining: 98_750, reserved: 1000, spent: 250, debt: 0, over: false });
    expect(await bal(t)).toEqual({ allocated: 1_000_000, remaining: 998_750, reserved: 1000, spent: 250, debt: 0, over: false });
    await expectInvariant(t);
  });

  it('ALLOW_IF_AVAILABLE (default): capped to the smallest remaining, charged returned, uncovered scope flagged, no debt', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 100]] });
    const res = await event(t, 250, { ws: 'w' });
    expect(res.statusCode, res.body).toBe(201);
    const b = json(res);
    expect(b.status).toBe('APPLIED');
    expect(b.charged).toEqual({ unit: USD, amount: 100 });
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 100, remaining: 0, reserved: 0, spent: 100, debt: 0, over: true });
    expect(await bal(t)).toEqual({ allocated: 1_000_000, remaining: 999_900, reserved: 0, spent: 100, debt: 0, over: false });
    await expectInvariant(t);
  });

  it('REJECT: 409 BUDGET_EXCEEDED when any scope lacks remaining (child or ancestor), nothing changes; exact fit passes', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 100]] });
    const before = await ledger(t);
    expectError(await event(t, 101, { ws: 'w', overage_policy: 'REJECT' }), 409, 'BUDGET_EXCEEDED');
    expect(await ledger(t)).toEqual(before);
    const ok = await event(t, 100, { ws: 'w', overage_policy: 'REJECT' });
    expect(ok.statusCode).toBe(201);
    expect(json(ok)).not.toHaveProperty('charged');
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 100, remaining: 0, reserved: 0, spent: 100, debt: 0, over: false });

    const anc = await createTenant(h, { budgets: [['', 50], ['workspace:w', 1000]] });
    const b2 = await ledger(anc);
    expectError(await event(anc, 60, { ws: 'w', overage_policy: 'REJECT' }), 409, 'BUDGET_EXCEEDED');
    expect(await ledger(anc)).toEqual(b2);
  });

  it("the tenant's default_commit_overage_policy applies when the event omits overage_policy", async () => {
    const t = await createTenant(h, { fields: { default_commit_overage_policy: 'REJECT' }, budgets: [['', 1_000_000], ['workspace:w', 100]] });
    const before = await ledger(t);
    expectError(await event(t, 250, { ws: 'w' }), 409, 'BUDGET_EXCEEDED');
    expect(await ledger(t)).toEqual(before);
    const explicit = await event(t, 250, { ws: 'w', overage_policy: 'ALLOW_IF_AVAILABLE' });
    expect(json(explicit).charged).toEqual({ unit: USD, amount: 100 });
  });

  it('ALLOW_WITH_OVERDRAFT: within the limit the shortfall becomes debt; past it → 409 and no change', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 0, { overdraft: 100 }]] });
    const before = await ledger(t);
    expectError(await event(t, 250, { ws: 'w', overage_policy: OD }), 409, 'OVERDRAFT_LIMIT_EXCEEDED');
    expect(await ledger(t)).toEqual(before);
    const ok = await event(t, 50, { ws: 'w', overage_policy: OD });
    expect(ok.statusCode, ok.body).toBe(201);
    expect(json(ok)).not.toHaveProperty('charged');
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 0, remaining: -50, reserved: 0, spent: 0, debt: 50, over: false });
    expect(await bal(t)).toEqual({ allocated: 1_000_000, remaining: 999_950, reserved: 0, spent: 50, debt: 0, over: false });
    expect((await event(t, 50, { ws: 'w', overage_policy: OD })).statusCode).toBe(201);
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 0, remaining: -100, reserved: 0, spent: 0, debt: 100, over: false });
    const before2 = await ledger(t);
    expectError(await event(t, 1, { ws: 'w', overage_policy: OD }), 409, 'OVERDRAFT_LIMIT_EXCEEDED');
    expect(await ledger(t)).toEqual(before2);
    await expectInvariant(t);
  });

  it('ALLOW_WITH_OVERDRAFT on a partly funded scope: spent = funded part, debt = unfunded part', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 100, { overdraft: 1000 }]] });
    const res = await event(t, 250, { ws: 'w', overage_policy: OD });
    expect(res.statusCode).toBe(201);
    expect(json(res)).not.toHaveProperty('charged');
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 100, remaining: -150, reserved: 0, spent: 100, debt: 150, over: false });
    expect(await bal(t)).toEqual({ allocated: 1_000_000, remaining: 999_750, reserved: 0, spent: 250, debt: 0, over: false });
    await expectInvariant(t);
  });

  it('ALLOW_WITH_OVERDRAFT with a zero-limit scope caps like ALLOW_IF_AVAILABLE (charged returned, flagged, no debt)', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 100]] });
    const res = await event(t, 250, { ws: 'w', overage_policy: OD });
    expect(res.statusCode).toBe(201);
    expect(json(res).charged).toEqual({ unit: USD, amount: 100 });
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 100, remaining: 0, reserved: 0, spent: 100, debt: 0, over: true });
    expect(await bal(t)).toEqual({ allocated: 1_000_000, remaining: 999_900, reserved: 0, spent: 100, debt: 0, over: false });
  });

  it('ALLOW_WITH_OVERDRAFT mixed scopes: the zero-limit scope caps the amount; the limited scope takes the capped shortfall as debt', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 100, { overdraft: 1000 }], ['workspace:w/app:a', 150]] });
    const res = await t.post('/v1/events', t.eventBody(400, { subject: { tenant: t.id, workspace: 'w', app: 'a' }, overage_policy: OD }));
    expect(res.statusCode, res.body).toBe(201);
    expect(json(res).charged).toEqual({ unit: USD, amount: 150 });
    expect(await bal(t, 'workspace:w/app:a')).toEqual({ allocated: 150, remaining: 0, reserved: 0, spent: 150, debt: 0, over: true });
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 100, remaining: -50, reserved: 0, spent: 100, debt: 50, over: false });
    expect(await bal(t)).toEqual({ allocated: 1_000_000, remaining: 999_850, reserved: 0, spent: 150, debt: 0, over: false });
    await expectInvariant(t);
  });

  it('over-limit and debt block reservations, not events', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 1000], ['workspace:d', 100, { overdraft: 1000 }]] });
    const a = await t.reserveOk(100, { ws: 'w' });
    const b = await t.reserveOk(900, { ws: 'w' });
    expect((await t.commit(b, 901)).statusCode).toBe(200);
    expect((await t.release(a)).statusCode).toBe(200);
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 1000, remaining: 100, reserved: 0, spent: 900, debt: 0, over: true });
    const blocked = await ledger(t);
    expectError(await t.reserve(1, { ws: 'w' }), 409, 'OVERDRAFT_LIMIT_EXCEEDED');
    expect(await ledger(t)).toEqual(blocked);
    const ev = await event(t, 50, { ws: 'w' });
    expect(ev.statusCode, ev.body).toBe(201);
    expect(json(ev)).not.toHaveProperty('charged');
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 1000, remaining: 50, reserved: 0, spent: 950, debt: 0, over: true });

    expect((await event(t, 150, { ws: 'd', overage_policy: OD })).statusCode).toBe(201);
    expect((await event(t, 10, { ws: 'd', overage_policy: OD })).statusCode).toBe(201);
    expect(await bal(t, 'workspace:d')).toEqual({ allocated: 100, remaining: -60, reserved: 0, spent: 100, debt: 60, over: false });
    await expectInvariant(t);
  });

  it('errors: UNIT_MISMATCH 400, NOT_FOUND 404, BUDGET_FROZEN 409, FORBIDDEN 403, client_time_ms −1 → 400; none change the ledger', async () => {
    const tok = await createTenant(h, { budgets: [['', 1000, { unit: 'TOKENS' }]] });
    const b0 = await ledger(tok);
    const um = expectError(await event(tok, 10), 400, 'UNIT_MISMATCH');
    expect(um.details?.expected_units).toEqual(['TOKENS']);
    expect(await ledger(tok)).toEqual(b0);

    const empty = await createTenant(h, { budgets: [] });
    const nf = expectError(await event(empty, 10), 404, 'NOT_FOUND');
    expect(nf.message).toContain('Budget not found');
    expect(await ledger(empty)).toEqual({});

    const t = await createTenant(h);
    await freeze(t, 'workspace:prod');
    const before = await ledger(t);
    expectError(await event(t, 10), 409, 'BUDGET_FROZEN');
    expectError(await t.post('/v1/events', t.eventBody(10, { subject: { tenant: 'other-tenant', workspace: 'prod' } })), 403, 'FORBIDDEN');
    expectError(await event(t, 10, { ws: 'dev', client_time_ms: -1 }), 400, 'INVALID_REQUEST');
    expectError(await event(t, 10, { ws: 'dev', dry_run: true }), 400, 'INVALID_REQUEST');
    expect(await ledger(t)).toEqual(before);
    // client_time_ms is advisory: 0 is processed normally (on an unfrozen path).
    const ok = await event(t, 10, { ws: 'dev', client_time_ms: 0 });
    expect(ok.statusCode, ok.body).toBe(201);
    expect(await bal(t)).toEqual({ allocated: 1_000_000, remaining: 999_990, reserved: 0, spent: 10, debt: 0, over: false });
  });

  it('replay returns the same event_id and charges once; different actual → IDEMPOTENCY_MISMATCH', async () => {
    const t = await createTenant(h);
    const body = t.eventBody(250);
    const first = await t.post('/v1/events', body);
    expect(first.statusCode).toBe(201);
    const after = await ledger(t);
    const again = await t.post('/v1/events', body);
    expect(again.statusCode).toBe(201);
    expect(json(again)).toEqual(json(first));
    expect(await ledger(t)).toEqual(after);
    expectError(await t.post('/v1/events', { ...body, actual: { unit: USD, amount: 300 } }), 409, 'IDEMPOTENCY_MISMATCH');
    expect(await ledger(t)).toEqual(after);
    expect(after[`${t.scope('workspace:prod')}|${USD}`].spent).toBe(250);
  });
});

describe('decide', () => {
  it('ALLOW: affected_scopes in canonical order, no reservation, no ledger change', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    const body = t.decideBody(100);
    const res = await t.post('/v1/decide', body);
    expect(res.statusCode, res.body).toBe(200);
    expect(json(res)).toEqual({ decision: 'ALLOW', affected_scopes: [t.scope(), t.scope('workspace:prod')] });
    expect(await ledger(t)).toEqual(before);
    expect(json(await t.get(`/v1/reservations?idempotency_key=${body.idempotency_key}`)).reservations).toEqual([]);
    expect(json(await t.get('/v1/reservations')).reservations).toEqual([]);
  });

  it('budget states are 200 DENY with the reason code, never 409/404, and change nothing', async () => {
    const t = await createTenant(h, {
      budgets: [['', 1_000_000], ['workspace:prod', 100_000], ['workspace:fz', 1000], ['workspace:cl', 1000], ['workspace:ol', 1000], ['workspace:db', 100, { overdraft: 1000 }]] });
    await freeze(t, 'workspace:fz');
    await fixture(t, 'workspace:cl', { status: 'CLOSED' });
    // Over-limit through ALLOW_IF_AVAILABLE capping.
    const r = await t.reserveOk(1000, { ws: 'ol' });
    expect((await t.commit(r, 1001)).statusCode).toBe(200);
    // Debt 50 with limit 0 and no over-limit flag: fixture after a real overdraft commit.
    const d = await t.reserveOk(100, { ws: 'db', overage_policy: OD });
    expect((await t.commit(d, 150)).statusCode).toBe(200);
    await fixture(t, 'workspace:db', { overdraft_limit: '0', over_limit: '0' });
    expect(await bal(t, 'workspace:db')).toEqual({ allocated: 100, remaining: -50, reserved: 0, spent: 100, debt: 50, over: false });

    const before = await ledger(t);
    const cases: Array<[number, string, string]> = [
      [100_001, 'prod', 'BUDGET_EXCEEDED'],
      [1, 'fz', 'BUDGET_FROZEN'],
      [1, 'cl', 'BUDGET_CLOSED'],
      [1, 'ol', 'OVERDRAFT_LIMIT_EXCEEDED'],
      [1, 'db', 'DEBT_OUTSTANDING'],
    ];
    for (const [amount, ws, reason] of cases) {
      const res = await decide(t, amount, { ws });
      expect(res.statusCode, `${ws}: ${res.body}`).toBe(200);
      expect(json(res)).toEqual({ decision: 'DENY', reason_code: reason, affected_scopes: [t.scope(), t.scope(`workspace:${ws}`)] });
    }
    expect(await ledger(t)).toEqual(before);

    const empty = await createTenant(h, { budgets: [] });
    const nf = await decide(empty, 1);
    expect(nf.statusCode).toBe(200);
    expect(json(nf)).toEqual({ decision: 'DENY', reason_code: 'BUDGET_NOT_FOUND', affected_scopes: [empty.scope(), empty.scope('workspace:prod')] });
    expect(await ledger(empty)).toEqual({});
  });

  it('request-validity errors: UNIT_MISMATCH 400, FORBIDDEN 403, missing key or extra fields 400', async () => {
    const tok = await createTenant(h, { budgets: [['', 1000, { unit: 'TOKENS' }]] });
    const before = await ledger(tok);
    expectError(await decide(tok, 1), 400, 'UNIT_MISMATCH');
    expectError(await tok.post('/v1/decide', tok.decideBody(1, { subject: { tenant: 'other-tenant' } })), 403, 'FORBIDDEN');
    const noKey: Record<string, unknown> = tok.decideBody(1, { unit: 'TOKENS' });
    delete noKey.idempotency_key;
    expectError(await tok.post('/v1/decide', noKey), 400, 'INVALID_REQUEST');
    expectError(await decide(tok, 1, { unit: 'TOKENS', dry_run: true }), 400, 'INVALID_REQUEST');
    expectError(await decide(tok, 1, { unit: 'TOKENS', ttl_ms: 5000 }), 400, 'INVALID_REQUEST');
    expect(await ledger(tok)).toEqual(before);
    const ok = await decide(tok, 1, { unit: 'TOKENS' });
    expect(json(ok)).toEqual({ decision: 'ALLOW', affected_scopes: [tok.scope(), tok.scope('workspace:prod')] });
  });

  it('replay returns the original body after the budget changed; different estimate → IDEMPOTENCY_MISMATCH', async () => {
    const t = await createTenant(h);
    const deny = t.decideBody(150_000);
    const d1 = await t.post('/v1/decide', deny);
    expect(json(d1)).toEqual({ decision: 'DENY', reason_code: 'BUDGET_EXCEEDED', affected_scopes: [t.scope(), t.scope('workspace:prod')] });
    const allow = t.decideBody(10);
    const a1 = await t.post('/v1/decide', allow);
    expect(json(a1).decision).toBe('ALLOW');

    await t.fund('workspace:prod', 'CREDIT', 100_000);
    await freeze(t, '');
    const before = await ledger(t);
    // Fresh evaluations see the new state...
    expect(json(await decide(t, 150_000)).reason_code).toBe('BUDGET_FROZEN');
    // ...replays return the stored bodies verbatim.
    const d2 = await t.post('/v1/decide', deny);
    expect(d2.statusCode).toBe(200);
    expect(d2.body).toBe(d1.body);
    const a2 = await t.post('/v1/decide', allow);
    expect(a2.statusCode).toBe(200);
    expect(a2.body).toBe(a1.body);
    expectError(await t.post('/v1/decide', { ...allow, estimate: { unit: USD, amount: 11 } }), 409, 'IDEMPOTENCY_MISMATCH');
    expect(await ledger(t)).toEqual(before);
  });

  it('decide and reserve keep separate idempotency namespaces', async () => {
    const t = await createTenant(h);
    const k = idem('shared');
    expect((await t.post('/v1/decide', t.decideBody(100, { idempotency_key: k }))).statusCode).toBe(200);
    const res = await t.reserve(100, { idempotency_key: k });
    expect(res.statusCode, res.body).toBe(200);
    expect(typeof json(res).reservation_id).toBe('string');
    expect((await t.balance('workspace:prod')).reserved.amount).toBe(100);
  });
});
