import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shortOfReservationId } from '../src/domain/ids.js';
import { ADMIN_KEY, USD, createTenant, idem, json, startHarness, expectError, nums, expectInvariant, getRes, ledger, type Harness, type TestTenant } from './helpers.js';

/**
 * POST /v1/reservations (runtime digest §2.1, §3.2, §3.10, §3.11; checklist §9 D, E, F).
 * Each test provisions its own tenant; the harness uses its own key prefix so no other file's
 * expiry sweep ever touches these tenants.
 */

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ keyPrefix: `cyt-reserve-${randomBytes(4).toString('hex')}` });
});
afterAll(async () => h?.close());

const ADMIN = { 'x-admin-api-key': ADMIN_KEY };

const key = (t: TestTenant, rel = '', unit = USD) => `${t.scope(rel)}|${unit}`;

/** The ledger with `amount` additionally held on the given keys. */
function withHold(before: Record<string, any>, keys: string[], amount: number): Record<string, any> {
  const out = structuredClone(before);
  for (const k of keys) {
    out[k].reserved += amount;
    out[k].remaining -= amount;
  }
  return out;
}

async function adminCall(method: 'POST' | 'PATCH', url: string, payload: object) {
  return h.admin.inject({ method, url, headers: ADMIN, payload });
}

const q = (t: TestTenant, rel: string, unit = USD) => `scope=${encodeURIComponent(t.scope(rel))}&unit=${unit}`;

async function freeze(t: TestTenant, rel: string) {
  const r = await adminCall('POST', `/v1/admin/budgets/freeze?${q(t, rel)}`, {});
  expect(r.statusCode, r.body).toBe(200);
}

async function unfreeze(t: TestTenant, rel: string) {
  const r = await adminCall('POST', `/v1/admin/budgets/unfreeze?${q(t, rel)}`, {});
  expect(r.statusCode, r.body).toBe(200);
}

async function patchBudget(t: TestTenant, rel: string, body: object) {
  const r = await adminCall('PATCH', `/v1/admin/budgets?${q(t, rel)}`, body);
  expect(r.statusCode, r.body).toBe(200);
  return json(r);
}

/** Fixture-only ledger states (digest §9 "Fixture-only states"): a direct write to the real store. */
async function fixture(t: TestTenant, rel: string, fields: Record<string, string>) {
  await h.system.redis.hset(h.system.keys.budget(t.id, t.scope(rel), USD), fields);
}

describe('reserve: scope derivation', () => {
  it('derives scope_path and all canonical prefixes, including the unbudgeted leaf', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    const res = await t.post('/v1/reservations', t.reserveBody(100, { subject: { tenant: t.id, workspace: 'prod', agent: 'bot' } }));
    expect(res.statusCode, res.body).toBe(200);
    const b = json(res);
    expect(b.decision).toBe('ALLOW');
    expect(typeof b.reservation_id).toBe('string');
    expect(b.reservation_id.length).toBeGreaterThan(0);
    expect(b.reserved).toEqual({ unit: USD, amount: 100 });
    expect(b.scope_path).toBe(`tenant:${t.id}/workspace:prod/agent:bot`);
    expect(b.affected_scopes).toEqual([`tenant:${t.id}`, `tenant:${t.id}/workspace:prod`, `tenant:${t.id}/workspace:prod/agent:bot`]);
    expect(Number.isInteger(b.expires_at_ms)).toBe(true);
    expect(b.remaining_ttl_ms).toBeGreaterThan(58_000);
    expect(b.remaining_ttl_ms).toBeLessThanOrEqual(60_000);
    expect(b).not.toHaveProperty('caps');
    expect(b).not.toHaveProperty('reason_code');
    // Held on both budgeted scopes; the agent level has no ledger and gets none.
    expect(await ledger(t)).toEqual(withHold(before, [key(t), key(t, 'workspace:prod')], 100));
    await expectInvariant(t);
  });

  it('skips missing levels: tenant + agent gives tenant:x/agent:bot with no workspace segment', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    const res = await t.post('/v1/reservations', t.reserveBody(250, { subject: { tenant: t.id, agent: 'bot' } }));
    expect(res.statusCode, res.body).toBe(200);
    const b = json(res);
    expect(b.scope_path).toBe(`tenant:${t.id}/agent:bot`);
    expect(b.affected_scopes).toEqual([`tenant:${t.id}`, `tenant:${t.id}/agent:bot`]);
    for (const s of b.affected_scopes) {
      expect(s).not.toContain('workspace');
      expect(s).not.toContain('default');
    }
    // Only the tenant ledger is on this path; workspace:prod is untouched.
    expect(await ledger(t)).toEqual(withHold(before, [key(t)], 250));
  });

  it('lower-cases subject values in scope paths and still hits the lower-case budgets', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    const subject = { tenant: t.id, workspace: 'PROD', agent: 'Bot', dimensions: { cost_center: 'X1' } };
    const res = await t.post('/v1/reservations', t.reserveBody(300, { subject }));
    expect(res.statusCode, res.body).toBe(200);
    const b = json(res);
    expect(b.scope_path).toBe(`tenant:${t.id}/workspace:prod/agent:bot`);
    expect(b.affected_scopes).toEqual([`tenant:${t.id}`, `tenant:${t.id}/workspace:prod`, `tenant:${t.id}/workspace:prod/agent:bot`]);
    expect(await ledger(t)).toEqual(withHold(before, [key(t), key(t, 'workspace:prod')], 300));
    // The detail round-trips the subject exactly as sent (incl. dimensions), scopes canonical.
    const d = await getRes(t, b.reservation_id);
    expect(d.subject).toEqual(subject);
    expect(d.scope_path).toBe(b.scope_path);
    expect(d.affected_scopes).toEqual(b.affected_scopes);
    expect(d.status).toBe('ACTIVE');
    expect(d.reserved).toEqual({ unit: USD, amount: 300 });
    expect(d).not.toHaveProperty('finalized_at_ms');
    expect(d).not.toHaveProperty('committed');
  });

  it('holds on every budgeted derived scope (4 of 6) and release restores each exactly', async () => {
    const t = await createTenant(h, {
      budgets: [
        ['', 1_000_000],
        ['workspace:prod', 100_000],
        ['workspace:prod/app:a', 10_000],
        ['workspace:prod/app:a/workflow:w/agent:g', 5_000],
      ] });
    const before = await ledger(t);
    const subject = { tenant: t.id, workspace: 'prod', app: 'a', workflow: 'w', agent: 'g', toolset: 'ts' };
    const res = await t.post('/v1/reservations', t.reserveBody(700, { subject }));
    expect(res.statusCode, res.body).toBe(200);
    const b = json(res);
    const p = `tenant:${t.id}`;
    expect(b.affected_scopes).toEqual([
      p,
      `${p}/workspace:prod`,
      `${p}/workspace:prod/app:a`,
      `${p}/workspace:prod/app:a/workflow:w`,
      `${p}/workspace:prod/app:a/workflow:w/agent:g`,
      `${p}/workspace:prod/app:a/workflow:w/agent:g/toolset:ts`,
    ]);
    const held = [key(t), key(t, 'workspace:prod'), key(t, 'workspace:prod/app:a'), key(t, 'workspace:prod/app:a/workflow:w/agent:g')];
    const after = await ledger(t);
    expect(after).toEqual(withHold(before, held, 700));
    expect(after[key(t, 'workspace:prod/app:a/workflow:w/agent:g')]).toEqual({
      remaining: 4_300, reserved: 700, spent: 0, debt: 0, allocated: 5_000, over: false });
    await expectInvariant(t);
    const rel = await t.release(b.reservation_id);
    expect(rel.statusCode, rel.body).toBe(200);
    expect(await ledger(t)).toEqual(before);
  });

  it('skips an unbudgeted workspace: only the tenant ledger moves', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    const res = await t.reserve(500, { ws: 'unfunded' });
    expect(res.statusCode, res.body).toBe(200);
    expect(json(res).scope_path).toBe(`tenant:${t.id}/workspace:unfunded`);
    expect(await ledger(t)).toEqual(withHold(before, [key(t)], 500));
  });

  it('estimate 0 is valid and holds nothing', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    const res = await t.reserve(0);
    expect(res.statusCode, res.body).toBe(200);
    expect(json(res).reserved).toEqual({ unit: USD, amount: 0 });
    expect(await ledger(t)).toEqual(before);
  });
});

describe('reserve: budget denials (live → 409, never 200 DENY)', () => {
  it('an exhausted ancestor denies even though the child has budget', async () => {
    const t = await createTenant(h, { budgets: [['', 50], ['workspace:w', 100_000]] });
    const before = await ledger(t);
    const b = expectError(await t.reserve(60, { ws: 'w' }), 409, 'BUDGET_EXCEEDED');
    expect(b.details?.scope).toBe(t.scope());
    expect(await ledger(t)).toEqual(before);
    // 50 exactly fits the ancestor.
    expect((await t.reserve(50, { ws: 'w' })).statusCode).toBe(200);
  });

  it('BUDGET_EXCEEDED at the child changes no scope; remaining == estimate is allowed', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    const b = expectError(await t.reserve(100_001), 409, 'BUDGET_EXCEEDED');
    expect(b.details?.scope).toBe(t.scope('workspace:prod'));
    expect(await ledger(t)).toEqual(before);
    const ok = await t.reserve(100_000);
    expect(ok.statusCode, ok.body).toBe(200);
    const full = await ledger(t);
    expect(full).toEqual(withHold(before, [key(t), key(t, 'workspace:prod')], 100_000));
    expect(full[key(t, 'workspace:prod')].remaining).toBe(0);
    expectError(await t.reserve(1), 409, 'BUDGET_EXCEEDED');
    expect(await ledger(t)).toEqual(full);
  });

  it('BUDGET_FROZEN on a frozen workspace (even when the estimate would not fit), and on a frozen ancestor', async () => {
    const t = await createTenant(h);
    await freeze(t, 'workspace:prod');
    const before = await ledger(t);
    expectError(await t.reserve(1), 409, 'BUDGET_FROZEN');
    expectError(await t.reserve(500_000), 409, 'BUDGET_FROZEN');
    expect(await ledger(t)).toEqual(before);
    const dry = await t.reserve(1, { dry_run: true });
    expect(dry.statusCode).toBe(200);
    expect(json(dry)).toEqual({
      decision: 'DENY', reason_code: 'BUDGET_FROZEN', scope_path: t.scope('workspace:prod'), affected_scopes: [t.scope(), t.scope('workspace:prod')] });
    await unfreeze(t, 'workspace:prod');
    expect((await t.reserve(1)).statusCode).toBe(200);

    const t2 = await createTenant(h);
    await freeze(t2, '');
    const before2 = await ledger(t2);
    expectError(await t2.reserve(1), 409, 'BUDGET_FROZEN');
    expectError(await t2.reserve(1, { ws: 'unfunded' }), 409, 'BUDGET_FROZEN');
    expect(await ledger(t2)).toEqual(before2);
  });

  it('BUDGET_CLOSED on a closed budget (fixture: status CLOSED)', async () => {
    const t = await createTenant(h);
    await fixture(t, 'workspace:prod', { status: 'CLOSED' });
    const before = await ledger(t);
    expectError(await t.reserve(1), 409, 'BUDGET_CLOSED');
    expect(await ledger(t)).toEqual(before);
    const dry = await t.reserve(1, { dry_run: true });
    expect(dry.statusCode).toBe(200);
    expect(json(dry).decision).toBe('DENY');
    expect(json(dry).reason_code).toBe('BUDGET_CLOSED');
  });

  it('OVERDRAFT_LIMIT_EXCEEDED on an over-limit scope regardless of remaining', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 1000]] });
    const a = await t.reserveOk(100, { ws: 'w' });
    const b = await t.reserveOk(900, { ws: 'w' });
    // Remaining 0: commit 901 caps the overage to 0 and flags the workspace over-limit.
    const c = await t.commit(b, 901);
    expect(c.statusCode, c.body).toBe(200);
    expect(json(c).charged).toEqual({ unit: USD, amount: 900 });
    expect((await t.release(a)).statusCode).toBe(200);
    expect(nums(await t.balance('workspace:w'))).toEqual({ allocated: 1000, remaining: 100, reserved: 0, spent: 900, debt: 0, over: true });
    const before = await ledger(t);
    expectError(await t.reserve(1, { ws: 'w' }), 409, 'OVERDRAFT_LIMIT_EXCEEDED');
    expect(await ledger(t)).toEqual(before);
    const dry = await t.reserve(1, { ws: 'w', dry_run: true });
    expect(dry.statusCode).toBe(200);
    expect(json(dry).reason_code).toBe('OVERDRAFT_LIMIT_EXCEEDED');
    // Other scopes of the tenant are not blocked.
    expect((await t.reserve(1)).statusCode).toBe(200);
  });

  it('OVERDRAFT_LIMIT_EXCEEDED takes precedence over DEBT_OUTSTANDING; DEBT_OUTSTANDING when debt>0, limit 0, not over-limit', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 100, { overdraft: 1000 }]] });
    const rid = await t.reserveOk(100, { ws: 'w', overage_policy: 'ALLOW_WITH_OVERDRAFT' });
    const c = await t.commit(rid, 150);
    expect(c.statusCode, c.body).toBe(200);
    expect(nums(await t.balance('workspace:w'))).toEqual({ allocated: 100, remaining: -50, reserved: 0, spent: 100, debt: 50, over: false });

    // Dropping the limit to 0 with debt 50 makes the scope over-limit (debt > limit).
    const patched = await patchBudget(t, 'workspace:w', { overdraft_limit: { unit: USD, amount: 0 } });
    expect(patched.is_over_limit).toBe(true);
    let before = await ledger(t);
    expectError(await t.reserve(1, { ws: 'w' }), 409, 'OVERDRAFT_LIMIT_EXCEEDED');
    expect(await ledger(t)).toEqual(before);

    // Plenty of remaining, debt 50, limit 0, over-limit: still OVERDRAFT_LIMIT_EXCEEDED.
    await t.fund('workspace:w', 'CREDIT', 1000);
    expect(nums(await t.balance('workspace:w'))).toEqual({ allocated: 1100, remaining: 950, reserved: 0, spent: 100, debt: 50, over: true });
    before = await ledger(t);
    expectError(await t.reserve(1, { ws: 'w' }), 409, 'OVERDRAFT_LIMIT_EXCEEDED');
    expect(await ledger(t)).toEqual(before);

    // Fixture: clear the flag (debt 50, limit 0, not over-limit) - unreachable through the API.
    await fixture(t, 'workspace:w', { over_limit: '0' });
    before = await ledger(t);
    expectError(await t.reserve(1, { ws: 'w' }), 409, 'DEBT_OUTSTANDING');
    expect(await ledger(t)).toEqual(before);
    const dry = await t.reserve(1, { ws: 'w', dry_run: true });
    expect(dry.statusCode).toBe(200);
    expect(json(dry).decision).toBe('DENY');
    expect(json(dry).reason_code).toBe('DEBT_OUTSTANDING');
    expect(await ledger(t)).toEqual(before);
  });

  it('debt inside a positive overdraft limit does not block by itself: BUDGET_EXCEEDED while remaining < 0, ALLOW once funded', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 1000, { overdraft: 10_000 }]] });
    const rid = await t.reserveOk(100, { ws: 'w', overage_policy: 'ALLOW_WITH_OVERDRAFT' });
    expect((await t.commit(rid, 1050)).statusCode).toBe(200);
    expect(nums(await t.balance('workspace:w'))).toEqual({ allocated: 1000, remaining: -50, reserved: 0, spent: 1000, debt: 50, over: false });
    const before = await ledger(t);
    expectError(await t.reserve(1, { ws: 'w' }), 409, 'BUDGET_EXCEEDED');
    expect(await ledger(t)).toEqual(before);
    await t.fund('workspace:w', 'CREDIT', 100);
    const ok = await t.reserve(50, { ws: 'w' });
    expect(ok.statusCode, ok.body).toBe(200);
    expect(nums(await t.balance('workspace:w'))).toEqual({ allocated: 1100, remaining: 0, reserved: 50, spent: 1000, debt: 50, over: false });
  });

  it('UNIT_MISMATCH (400, live and dry-run) when budgets exist only in another unit', async () => {
    const t = await createTenant(h, { budgets: [['', 1000, { unit: 'TOKENS' }]] });
    const before = await ledger(t);
    const b = expectError(await t.reserve(10), 400, 'UNIT_MISMATCH');
    expect(b.details.scope).toBe(t.scope());
    expect(b.details.expected_units).toEqual(['TOKENS']);
    expectError(await t.reserve(10, { dry_run: true }), 400, 'UNIT_MISMATCH');
    expect(await ledger(t)).toEqual(before);
    // The same subject in TOKENS is fine.
    const ok = await t.reserve(10, { unit: 'TOKENS' });
    expect(ok.statusCode, ok.body).toBe(200);
    expect(json(ok).reserved).toEqual({ unit: 'TOKENS', amount: 10 });
  });

  it('UNIT_MISMATCH details carry requested_unit (digest §2.1/§4.1 SHOULD: scope, requested_unit, expected_units[])', async () => {
    const t = await createTenant(h, { budgets: [['', 1000, { unit: 'TOKENS' }]] });
    const before = await ledger(t);
    const b = expectError(await t.reserve(10), 400, 'UNIT_MISMATCH');
    expect(b.details).toEqual({ scope: t.scope(), requested_unit: USD, expected_units: ['TOKENS'] });
    expect(await ledger(t)).toEqual(before);
  });

  it('404 NOT_FOUND "Budget not found" when no derived scope has a budget in any unit; dry-run → 200 DENY BUDGET_NOT_FOUND', async () => {
    const t = await createTenant(h, { budgets: [] });
    const subject = { tenant: t.id, workspace: 'w', agent: 'x' };
    const b = expectError(await t.post('/v1/reservations', t.reserveBody(10, { subject })), 404, 'NOT_FOUND');
    expect(b.message).toContain('Budget not found');
    expect(await ledger(t)).toEqual({});
    const dry = await t.post('/v1/reservations', t.reserveBody(10, { subject, dry_run: true }));
    expect(dry.statusCode).toBe(200);
    expect(json(dry)).toEqual({
      decision: 'DENY',
      reason_code: 'BUDGET_NOT_FOUND',
      scope_path: `${t.scope()}/workspace:w/agent:x`,
      affected_scopes: [t.scope(), `${t.scope()}/workspace:w`, `${t.scope()}/workspace:w/agent:x`] });
  });

  it('FORBIDDEN when subject.tenant is another tenant; nothing changes', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    expectError(await t.post('/v1/reservations', t.reserveBody(10, { subject: { tenant: 'someone-else', workspace: 'prod' } })), 403, 'FORBIDDEN');
    expect(await ledger(t)).toEqual(before);
  });

  it('50 concurrent reserves of 100 on a 1000 budget: exactly 10 succeed, never oversubscribed', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 1000]] });
    const results = await Promise.all(Array.from({ length: 50 }, () => t.reserve(100, { ws: 'w' })));
    const ok = results.filter((r) => r.statusCode === 200);
    const denied = results.filter((r) => r.statusCode === 409);
    expect(ok.length).toBe(10);
    expect(denied.length).toBe(40);
    for (const r of denied) expect(json(r).error).toBe('BUDGET_EXCEEDED');
    expect(new Set(ok.map((r) => json(r).reservation_id)).size).toBe(10);
    expect(nums(await t.balance('workspace:w'))).toEqual({ allocated: 1000, remaining: 0, reserved: 1000, spent: 0, debt: 0, over: false });
    await expectInvariant(t);
  });
});

describe('reserve: dry_run', () => {
  it('dry_run ALLOW: no reservation_id/expires_at_ms/remaining_ttl_ms, nothing persisted, no ledger change', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    const body = t.reserveBody(100, { dry_run: true });
    const res = await t.post('/v1/reservations', body);
    expect(res.statusCode, res.body).toBe(200);
    expect(json(res)).toEqual({
      decision: 'ALLOW',
      reserved: { unit: USD, amount: 100 },
      scope_path: t.scope('workspace:prod'),
      affected_scopes: [t.scope(), t.scope('workspace:prod')] });
    expect(await ledger(t)).toEqual(before);
    const list = await t.get(`/v1/reservations?idempotency_key=${body.idempotency_key}`);
    expect(list.statusCode).toBe(200);
    expect(json(list).reservations).toEqual([]);
    const all = await t.get('/v1/reservations');
    expect(json(all).reservations).toEqual([]);
  });

  it('dry_run DENY BUDGET_EXCEEDED: 200, reason_code, affected_scopes, no caps or ids', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    const res = await t.reserve(100_001, { dry_run: true });
    expect(res.statusCode, res.body).toBe(200);
    const b = json(res);
    expect(b).toEqual({
      decision: 'DENY',
      reason_code: 'BUDGET_EXCEEDED',
      scope_path: t.scope('workspace:prod'),
      affected_scopes: [t.scope(), t.scope('workspace:prod')] });
    for (const k of ['reservation_id', 'expires_at_ms', 'remaining_ttl_ms', 'caps']) expect(b).not.toHaveProperty(k);
    expect(await ledger(t)).toEqual(before);
  });

  it('dry_run request-validity errors stay 4xx (tenant mismatch 403, missing action 400)', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    expectError(await t.post('/v1/reservations', t.reserveBody(1, { dry_run: true, subject: { tenant: 'other-t', workspace: 'prod' } })), 403, 'FORBIDDEN');
    const body: Record<string, unknown> = t.reserveBody(1, { dry_run: true });
    delete body.action;
    expectError(await t.post('/v1/reservations', body), 400, 'INVALID_REQUEST');
    expect(await ledger(t)).toEqual(before);
  });
});

describe('reserve: ttl, grace and tenant defaults', () => {
  async function ttlOf(t: TestTenant, over: Record<string, unknown> = {}) {
    const res = await t.reserve(1, over);
    expect(res.statusCode, res.body).toBe(200);
    const b = json(res);
    const d = await getRes(t, b.reservation_id);
    expect(d.expires_at_ms).toBe(b.expires_at_ms);
    const ttl = d.expires_at_ms - d.created_at_ms;
    expect(b.remaining_ttl_ms).toBeLessThanOrEqual(ttl);
    expect(b.remaining_ttl_ms).toBeGreaterThan(ttl - 2000);
    return { ttl, rid: b.reservation_id as string, expires: b.expires_at_ms as number };
  }

  it('ttl defaults to 60000, honours ttl_ms, and caps at 1 h without tenant config', async () => {
    const t = await createTenant(h);
    expect((await ttlOf(t)).ttl).toBe(60_000);
    expect((await ttlOf(t, { ttl_ms: 30_000 })).ttl).toBe(30_000);
    expect((await ttlOf(t, { ttl_ms: 1000 })).ttl).toBe(1000);
    expect((await ttlOf(t, { ttl_ms: 86_400_000 })).ttl).toBe(3_600_000);
  });

  it('tenant default_reservation_ttl_ms replaces the default; max_reservation_ttl_ms silently caps', async () => {
    const t = await createTenant(h, { fields: { default_reservation_ttl_ms: 120_000 } });
    expect((await ttlOf(t)).ttl).toBe(120_000);
    expect((await ttlOf(t, { ttl_ms: 5000 })).ttl).toBe(5000);

    const capped = await createTenant(h, { fields: { max_reservation_ttl_ms: 20_000 } });
    expect((await ttlOf(capped)).ttl).toBe(20_000);
    expect((await ttlOf(capped, { ttl_ms: 30_000 })).ttl).toBe(20_000);
    expect((await ttlOf(capped, { ttl_ms: 15_000 })).ttl).toBe(15_000);

    const both = await createTenant(h, { fields: { default_reservation_ttl_ms: 90_000, max_reservation_ttl_ms: 45_000 } });
    expect((await ttlOf(both)).ttl).toBe(45_000);
  });

  it('ttl_ms and grace_period_ms bounds: out of range → 400 with no ledger change; edges accepted', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    for (const over of [{ ttl_ms: 999 }, { ttl_ms: 86_400_001 }, { grace_period_ms: -1 }, { grace_period_ms: 60_001 }, { ttl_ms: 1500.5 }]) {
      expectError(await t.reserve(1, over), 400, 'INVALID_REQUEST');
    }
    expect(await ledger(t)).toEqual(before);
    for (const over of [{ grace_period_ms: 0 }, { grace_period_ms: 60_000 }, { ttl_ms: 1000 }, { ttl_ms: 86_400_000 }]) {
      expect((await t.reserve(1, over)).statusCode).toBe(200);
    }
  });

  it('grace defaults to 5000 and is stored as given (expiry index scores expires_at + grace)', async () => {
    const t = await createTenant(h);
    const idx = h.system.keys.expiryIndex(t.id);
    for (const [over, grace] of [[{}, 5000], [{ grace_period_ms: 0 }, 0], [{ grace_period_ms: 60_000 }, 60_000]] as const) {
      const { rid, expires } = await ttlOf(t, over);
      expect(Number(await h.system.redis.zscore(idx, shortOfReservationId(rid)!))).toBe(expires + grace);
    }
  });

  it("tenant default_commit_overage_policy applies when the request omits overage_policy; it is fixed at reserve time", async () => {
    const t = await createTenant(h, { fields: { default_commit_overage_policy: 'REJECT' } });
    const rid = await t.reserveOk(100);
    const before = await ledger(t);
    expectError(await t.commit(rid, 101), 409, 'BUDGET_EXCEEDED');
    expect(await ledger(t)).toEqual(before);
    // An explicit request value beats the tenant default.
    const rid2 = await t.reserveOk(100, { overage_policy: 'ALLOW_IF_AVAILABLE' });
    const c2 = await t.commit(rid2, 101);
    expect(c2.statusCode, c2.body).toBe(200);
    expect(json(c2)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 101 } });
    // Changing the tenant default later does not change an existing reservation's policy.
    const patch = await h.admin.inject({ method: 'PATCH', url: `/v1/admin/tenants/${t.id}`, headers: ADMIN, payload: { default_commit_overage_policy: 'ALLOW_IF_AVAILABLE' } });
    expect(patch.statusCode, patch.body).toBe(200);
    const beforeAgain = await ledger(t);
    expectError(await t.commit(rid, 101), 409, 'BUDGET_EXCEEDED');
    expect(await ledger(t)).toEqual(beforeAgain);
    // ...but new reservations pick up the new default.
    const rid3 = await t.reserveOk(100);
    expect(json(await t.commit(rid3, 101)).charged).toEqual({ unit: USD, amount: 101 });

    const od = await createTenant(h, { fields: { default_commit_overage_policy: 'ALLOW_WITH_OVERDRAFT' }, budgets: [['', 1_000_000], ['workspace:w', 100, { overdraft: 1000 }]] });
    const r = await od.reserveOk(100, { ws: 'w' });
    const c = await od.commit(r, 150);
    expect(c.statusCode, c.body).toBe(200);
    expect(json(c)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 150 } });
    expect(nums(await od.balance('workspace:w'))).toEqual({ allocated: 100, remaining: -50, reserved: 0, spent: 100, debt: 50, over: false });
  });
});

describe('reserve: request validation leaves the ledger alone', () => {
  it('schema violations → 400 INVALID_REQUEST', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    const bad: Array<Record<string, unknown>> = [
      { estimate: { unit: USD, amount: -1 } },
      { estimate: { unit: 'USD', amount: 1 } },
      { subject: { dimensions: { cost_center: 'x' } } },
      { subject: {} },
      { overage_policy: 'SOMETIMES' },
      { idempotency_key: '' },
      { idempotency_key: 'k'.repeat(257) },
      { unexpected_field: true },
    ];
    for (const over of bad) expectError(await t.post('/v1/reservations', t.reserveBody(1, over)), 400, 'INVALID_REQUEST');
    const body = t.reserveBody(1);
    expectError(await t.post('/v1/reservations', body, { 'x-idempotency-key': `${body.idempotency_key}-x` }), 400, 'INVALID_REQUEST');
    expect(await ledger(t)).toEqual(before);
    expect(json(await t.get('/v1/reservations')).reservations).toEqual([]);
    expect((await t.post('/v1/reservations', t.reserveBody(1, { idempotency_key: idem('k').padEnd(256, 'x') }))).statusCode).toBe(200);
  });
});
