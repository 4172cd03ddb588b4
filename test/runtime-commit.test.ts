import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { USD, createTenant, invariantHolds, json, startHarness, expectError, getRes, ledger, type Harness, type TestTenant } from './helpers.js';

/**
 * POST /v1/reservations/{id}/commit: the arithmetic of runtime digest §2.2 and §3.9 for every
 * overage policy, the invariant after each step, and the error paths (checklist §9 H).
 */

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ keyPrefix: `cyt-commit-${randomBytes(4).toString('hex')}` });
});
afterAll(async () => h?.close());

interface Nums {
  allocated: number;
  remaining: number;
  reserved: number;
  spent: number;
  debt: number;
  over: boolean;
}

function nums(b: any): Nums {
  return {
    allocated: b.allocated.amount,
    remaining: b.remaining.amount,
    reserved: b.reserved.amount,
    spent: b.spent.amount,
    debt: b.debt.amount,
    over: b.is_over_limit };
}

/** Every balance of the tenant satisfies remaining = allocated − spent − reserved − debt. */
async function expectInvariant(t: TestTenant): Promise<void> {
  const all = json(await t.get(`/v1/balances?tenant=${t.id}&limit=200`)).balances as any[];
  expect(all.length).toBeGreaterThan(0);
  for (const b of all) expect(invariantHolds(b), JSON.stringify(b)).toBe(true);
}

async function bal(t: TestTenant, rel = ''): Promise<Nums> {
  return nums(await t.balance(rel));
}

const OD = 'ALLOW_WITH_OVERDRAFT';

describe('commit: actual ≤ estimate (Δ ≤ 0)', () => {
  it('reserve 1000, commit 600: charged 600, released 400; reserved −1000, spent +600, remaining +400 on each scope', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(1000);
    await expectInvariant(t);
    expect(await bal(t, 'workspace:prod')).toEqual({ allocated: 100_000, remaining: 99_000, reserved: 1000, spent: 0, debt: 0, over: false });
    const c = await t.commit(rid, 600, { metadata: { a: 'b' } });
    expect(c.statusCode, c.body).toBe(200);
    expect(json(c)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 600 }, released: { unit: USD, amount: 400 } });
    expect(await bal(t, 'workspace:prod')).toEqual({ allocated: 100_000, remaining: 99_400, reserved: 0, spent: 600, debt: 0, over: false });
    expect(await bal(t)).toEqual({ allocated: 1_000_000, remaining: 999_400, reserved: 0, spent: 600, debt: 0, over: false });
    await expectInvariant(t);

    const d = await getRes(t, rid);
    expect(d.status).toBe('COMMITTED');
    expect(d.committed).toEqual({ unit: USD, amount: 600 });
    expect(d.reserved).toEqual({ unit: USD, amount: 1000 });
    expect(Number.isInteger(d.finalized_at_ms)).toBe(true);
    expect(d.finalized_at_ms).toBeGreaterThanOrEqual(d.created_at_ms);
    expect(d.committed_metadata).toEqual({ a: 'b' });
  });

  it('commit == estimate: charged 1000 and no released; commit 0 releases everything', async () => {
    const t = await createTenant(h);
    const r1 = await t.reserveOk(1000);
    const c1 = await t.commit(r1, 1000);
    expect(c1.statusCode).toBe(200);
    expect(json(c1)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 1000 } });
    const r2 = await t.reserveOk(700);
    const c2 = await t.commit(r2, 0);
    expect(json(c2)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 0 }, released: { unit: USD, amount: 700 } });
    expect(await bal(t, 'workspace:prod')).toEqual({ allocated: 100_000, remaining: 99_000, reserved: 0, spent: 1000, debt: 0, over: false });
    const d = await getRes(t, r2);
    expect(d.committed).toEqual({ unit: USD, amount: 0 });
    expect(d).not.toHaveProperty('committed_metadata');
    await expectInvariant(t);
  });

  it('Δ ≤ 0 is normal under every policy, including REJECT', async () => {
    for (const policy of ['REJECT', 'ALLOW_IF_AVAILABLE', OD]) {
      const t = await createTenant(h);
      const rid = await t.reserveOk(500, { overage_policy: policy });
      const c = await t.commit(rid, 450);
      expect(json(c)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 450 }, released: { unit: USD, amount: 50 } });
      expect(await bal(t, 'workspace:prod')).toEqual({ allocated: 100_000, remaining: 99_550, reserved: 0, spent: 450, debt: 0, over: false });
    }
  });
});

describe('commit: REJECT', () => {
  it('any Δ > 0 → 409 BUDGET_EXCEEDED, no ledger change, reservation stays ACTIVE and can be committed or released later', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(100, { overage_policy: 'REJECT' });
    const before = await ledger(t);
    expectError(await t.commit(rid, 101), 409, 'BUDGET_EXCEEDED');
    expect(await ledger(t)).toEqual(before);
    expect((await getRes(t, rid)).status).toBe('ACTIVE');
    const c = await t.commit(rid, 100);
    expect(c.statusCode, c.body).toBe(200);
    expect(json(c)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 100 } });

    const rid2 = await t.reserveOk(100, { overage_policy: 'REJECT' });
    const before2 = await ledger(t);
    expectError(await t.commit(rid2, 100_000), 409, 'BUDGET_EXCEEDED');
    expect(await ledger(t)).toEqual(before2);
    expect((await t.release(rid2)).statusCode).toBe(200);
    expect(await bal(t, 'workspace:prod')).toEqual({ allocated: 100_000, remaining: 99_900, reserved: 0, spent: 100, debt: 0, over: false });
    await expectInvariant(t);
  });
});

describe('commit: ALLOW_IF_AVAILABLE (default)', () => {
  it('charges the full Δ when every scope covers it', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 1000]] });
    const rid = await t.reserveOk(100, { ws: 'w' });
    const c = await t.commit(rid, 130);
    expect(json(c)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 130 } });
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 1000, remaining: 870, reserved: 0, spent: 130, debt: 0, over: false });
    expect(await bal(t)).toEqual({ allocated: 1_000_000, remaining: 999_870, reserved: 0, spent: 130, debt: 0, over: false });
    await expectInvariant(t);
  });

  it('allocated 200, reserve 200, commit 201: charged 200, remaining 0, no debt, is_over_limit only on the workspace', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 200]] });
    const rid = await t.reserveOk(200, { ws: 'w' });
    const c = await t.commit(rid, 201);
    expect(c.statusCode).toBe(200);
    expect(json(c)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 200 } });
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 200, remaining: 0, reserved: 0, spent: 200, debt: 0, over: true });
    expect(await bal(t)).toEqual({ allocated: 1_000_000, remaining: 999_800, reserved: 0, spent: 200, debt: 0, over: false });
    expect((await getRes(t, rid)).committed).toEqual({ unit: USD, amount: 200 });
    await expectInvariant(t);
  });

  it('partial cap: capped = min(Δ, min rem_s); flags only the scopes whose own rem < Δ', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 1000], ['workspace:w/app:a', 500]] });
    const subject = { tenant: t.id, workspace: 'w', app: 'a' };
    const rid = await t.reserveOk(400, { subject });
    // rem before commit: tenant 999,600, ws 600, app 100. Commit 700: Δ 300, capped 100.
    const c = await t.commit(rid, 700);
    expect(json(c)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 500 } });
    expect(await bal(t, 'workspace:w/app:a')).toEqual({ allocated: 500, remaining: 0, reserved: 0, spent: 500, debt: 0, over: true });
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 1000, remaining: 500, reserved: 0, spent: 500, debt: 0, over: false });
    expect(await bal(t)).toEqual({ allocated: 1_000_000, remaining: 999_500, reserved: 0, spent: 500, debt: 0, over: false });
    await expectInvariant(t);
  });

  it('a scope that covers Δ is not flagged even when another scope capped the charge', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 1000]] });
    const rid = await t.reserveOk(900, { ws: 'w' });
    const c = await t.commit(rid, 1200);
    expect(json(c)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 1000 } });
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 1000, remaining: 0, reserved: 0, spent: 1000, debt: 0, over: true });
    expect(await bal(t)).toEqual({ allocated: 1_000_000, remaining: 999_000, reserved: 0, spent: 1000, debt: 0, over: false });
    await expectInvariant(t);
  });

  it('never 409 whatever the remaining; existing reservations on an over-limit scope still commit and release', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 300]] });
    const a = await t.reserveOk(100, { ws: 'w' });
    const b = await t.reserveOk(100, { ws: 'w' });
    const c = await t.reserveOk(100, { ws: 'w' });
    const cb = await t.commit(b, 10_000_000);
    expect(cb.statusCode, cb.body).toBe(200);
    expect(json(cb)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 100 } });
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 300, remaining: 0, reserved: 200, spent: 100, debt: 0, over: true });
    const ca = await t.commit(a, 100);
    expect(ca.statusCode).toBe(200);
    expect(json(ca)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 100 } });
    expect((await t.release(c)).statusCode).toBe(200);
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 300, remaining: 100, reserved: 0, spent: 200, debt: 0, over: true });
    await expectInvariant(t);
  });
});

describe('commit: ALLOW_WITH_OVERDRAFT', () => {
  it('remaining covers Δ: charged in full, no debt', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 1000, { overdraft: 500 }]] });
    const rid = await t.reserveOk(100, { ws: 'w', overage_policy: OD });
    const c = await t.commit(rid, 300);
    expect(json(c)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 300 } });
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 1000, remaining: 700, reserved: 0, spent: 300, debt: 0, over: false });
    await expectInvariant(t);
  });

  it('shortfall becomes debt (only the unfunded part): fund 1000 limit 10,000, reserve 100, commit 1050 → remaining −50, debt 50, spent 1000', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 1000, { overdraft: 10_000 }]] });
    const rid = await t.reserveOk(100, { ws: 'w', overage_policy: OD });
    const c = await t.commit(rid, 1050);
    expect(c.statusCode, c.body).toBe(200);
    expect(json(c)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 1050 } });
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 1000, remaining: -50, reserved: 0, spent: 1000, debt: 50, over: false });
    expect(await bal(t)).toEqual({ allocated: 1_000_000, remaining: 998_950, reserved: 0, spent: 1050, debt: 0, over: false });
    expect((await getRes(t, rid)).committed).toEqual({ unit: USD, amount: 1050 });
    await expectInvariant(t);
  });

  it('limit would be exceeded → 409 OVERDRAFT_LIMIT_EXCEEDED, no change, still ACTIVE; debt == limit is allowed and not over-limit', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 100, { overdraft: 10 }]] });
    const rid = await t.reserveOk(100, { ws: 'w', overage_policy: OD });
    const before = await ledger(t);
    const e = expectError(await t.commit(rid, 200), 409, 'OVERDRAFT_LIMIT_EXCEEDED');
    expect(e.details?.scope).toBe(t.scope('workspace:w'));
    expectError(await t.commit(rid, 111), 409, 'OVERDRAFT_LIMIT_EXCEEDED');
    expect(await ledger(t)).toEqual(before);
    expect((await getRes(t, rid)).status).toBe('ACTIVE');
    const c = await t.commit(rid, 110);
    expect(c.statusCode, c.body).toBe(200);
    expect(json(c)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 110 } });
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 100, remaining: -10, reserved: 0, spent: 100, debt: 10, over: false });
    await expectInvariant(t);
  });

  it('accumulated debt counts against the limit on the next commit', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 100, { overdraft: 100 }]] });
    const a = await t.reserveOk(50, { ws: 'w', overage_policy: OD });
    const b = await t.reserveOk(50, { ws: 'w', overage_policy: OD });
    expect(json(await t.commit(a, 110))).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 110 } });
    // rem 0 at the first commit (b still holds 50): deficit 60.
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 100, remaining: -60, reserved: 50, spent: 50, debt: 60, over: false });
    const before = await ledger(t);
    expectError(await t.commit(b, 91), 409, 'OVERDRAFT_LIMIT_EXCEEDED');
    expect(await ledger(t)).toEqual(before);
    expect(json(await t.commit(b, 90))).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 90 } });
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 100, remaining: -100, reserved: 0, spent: 100, debt: 100, over: false });
    await expectInvariant(t);
  });

  it('a scope with no overdraft limit behaves like ALLOW_IF_AVAILABLE: capped, flagged, no debt', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 100]] });
    const rid = await t.reserveOk(100, { ws: 'w', overage_policy: OD });
    const c = await t.commit(rid, 150);
    expect(c.statusCode, c.body).toBe(200);
    expect(json(c)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 100 } });
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 100, remaining: 0, reserved: 0, spent: 100, debt: 0, over: true });
    expect(await bal(t)).toEqual({ allocated: 1_000_000, remaining: 999_900, reserved: 0, spent: 100, debt: 0, over: false });
    await expectInvariant(t);
  });

  it('mixed scopes: debt lands only on the limited scope that cannot fund Δ; scopes that can are charged normally', async () => {
    const t = await createTenant(h, {
      budgets: [['', 1_000_000], ['workspace:w', 100, { overdraft: 1000 }], ['workspace:w/app:a', 1000]] });
    const subject = { tenant: t.id, workspace: 'w', app: 'a' };
    const rid = await t.reserveOk(100, { subject, overage_policy: OD });
    // rem: tenant 999,900, ws 0 (limit 1000), app 900 (limit 0). Commit 400: Δ 300.
    const c = await t.commit(rid, 400);
    expect(json(c)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 400 } });
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 100, remaining: -300, reserved: 0, spent: 100, debt: 300, over: false });
    expect(await bal(t, 'workspace:w/app:a')).toEqual({ allocated: 1000, remaining: 600, reserved: 0, spent: 400, debt: 0, over: false });
    expect(await bal(t)).toEqual({ allocated: 1_000_000, remaining: 999_600, reserved: 0, spent: 400, debt: 0, over: false });
    await expectInvariant(t);
  });

  it('mixed scopes: an uncovered zero-limit scope caps Δ for every scope (and is flagged); the limited scope takes the capped shortfall as debt', async () => {
    const t = await createTenant(h, {
      budgets: [['', 1_000_000], ['workspace:w', 100, { overdraft: 1000 }], ['workspace:w/app:a', 150]] });
    const subject = { tenant: t.id, workspace: 'w', app: 'a' };
    const rid = await t.reserveOk(100, { subject, overage_policy: OD });
    // rem: tenant 999,900, ws 0 (limit 1000), app 50 (limit 0). Commit 400: Δ 300 → Δ' = 50.
    const c = await t.commit(rid, 400);
    expect(json(c)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 150 } });
    expect(await bal(t, 'workspace:w/app:a')).toEqual({ allocated: 150, remaining: 0, reserved: 0, spent: 150, debt: 0, over: true });
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 100, remaining: -50, reserved: 0, spent: 100, debt: 50, over: false });
    expect(await bal(t)).toEqual({ allocated: 1_000_000, remaining: 999_850, reserved: 0, spent: 150, debt: 0, over: false });
    await expectInvariant(t);
  });

  it('mixed scopes: one limited scope over its limit rejects the whole commit, nothing changes anywhere', async () => {
    const t = await createTenant(h, {
      budgets: [['', 1_000_000], ['workspace:w', 100, { overdraft: 1000 }], ['workspace:w/app:a', 100, { overdraft: 10 }]] });
    const subject = { tenant: t.id, workspace: 'w', app: 'a' };
    const rid = await t.reserveOk(100, { subject, overage_policy: OD });
    const before = await ledger(t);
    const e = expectError(await t.commit(rid, 200), 409, 'OVERDRAFT_LIMIT_EXCEEDED');
    expect(e.details?.scope).toBe(t.scope('workspace:w/app:a'));
    expect(await ledger(t)).toEqual(before);
    expect(json(await t.commit(rid, 110))).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 110 } });
    expect(await bal(t, 'workspace:w')).toEqual({ allocated: 100, remaining: -10, reserved: 0, spent: 100, debt: 10, over: false });
    expect(await bal(t, 'workspace:w/app:a')).toEqual({ allocated: 100, remaining: -10, reserved: 0, spent: 100, debt: 10, over: false });
    await expectInvariant(t);
  });
});

describe('commit: errors', () => {
  it('UNIT_MISMATCH (400) keeps the reservation ACTIVE; a correct commit afterwards succeeds', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(500);
    const before = await ledger(t);
    const e = expectError(await t.commit(rid, 100, { actual: { unit: 'TOKENS', amount: 100 } }), 400, 'UNIT_MISMATCH');
    expect(e.details?.expected_units).toEqual([USD]);
    expect(await ledger(t)).toEqual(before);
    expect((await getRes(t, rid)).status).toBe('ACTIVE');
    expect(json(await t.commit(rid, 100))).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 100 }, released: { unit: USD, amount: 400 } });
  });

  it('RESERVATION_FINALIZED on a second commit with a new key, and on a RELEASED reservation', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(500);
    expect((await t.commit(rid, 300)).statusCode).toBe(200);
    const before = await ledger(t);
    expectError(await t.commit(rid, 300), 409, 'RESERVATION_FINALIZED');
    expectError(await t.commit(rid, 10), 409, 'RESERVATION_FINALIZED');
    const rel = await t.reserveOk(200);
    expect((await t.release(rel)).statusCode).toBe(200);
    const before2 = await ledger(t);
    expect(before2).toEqual(before);
    expectError(await t.commit(rel, 100), 409, 'RESERVATION_FINALIZED');
    expect(await ledger(t)).toEqual(before);
    expect((await getRes(t, rid)).committed).toEqual({ unit: USD, amount: 300 });
    expect((await getRes(t, rel)).status).toBe('RELEASED');
  });

  it('NOT_FOUND for ids that never existed', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    expectError(await t.commit('does-not-exist-123', 10), 404, 'NOT_FOUND');
    expectError(await t.commit(`rsv_${t.id}_${'0'.repeat(24)}`, 10), 404, 'NOT_FOUND');
    expect(await ledger(t)).toEqual(before);
  });

  it('NOT_FOUND (protocol envelope + X-Cycles-Trace-Id) for never-existing ids of any valid length 1..128', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(100);
    const before = await ledger(t);
    for (const id of ['x', 'b'.repeat(100), 'c'.repeat(101), 'd'.repeat(128)]) {
      const res = await t.commit(id, 10);
      expect(res.headers['x-cycles-trace-id'], `id length ${id.length}`).toMatch(/^[0-9a-f]{32}$/);
      expectError(res, 404, 'NOT_FOUND');
    }
    expect(await ledger(t)).toEqual(before);
    expect((await getRes(t, rid)).status).toBe('ACTIVE');
  });

  it("FORBIDDEN for another tenant's reservation (commit, release, extend, get); it stays ACTIVE", async () => {
    const owner = await createTenant(h);
    const other = await createTenant(h);
    const rid = await owner.reserveOk(400);
    const beforeOwner = await ledger(owner);
    const beforeOther = await ledger(other);
    expectError(await other.commit(rid, 10), 403, 'FORBIDDEN');
    expectError(await other.release(rid), 403, 'FORBIDDEN');
    expectError(await other.post(`/v1/reservations/${rid}/extend`, { idempotency_key: 'x-1', extend_by_ms: 1000 }), 403, 'FORBIDDEN');
    expectError(await other.get(`/v1/reservations/${rid}`), 403, 'FORBIDDEN');
    expect(await ledger(owner)).toEqual(beforeOwner);
    expect(await ledger(other)).toEqual(beforeOther);
    expect((await getRes(owner, rid)).status).toBe('ACTIVE');
    expect((await owner.commit(rid, 400)).statusCode).toBe(200);
  });

  it('schema violations → 400 and no change', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(100);
    const before = await ledger(t);
    expectError(await t.commit(rid, 1, { actual: { unit: USD, amount: -5 } }), 400, 'INVALID_REQUEST');
    expectError(await t.post(`/v1/reservations/${rid}/commit`, { idempotency_key: 'k-no-actual' }), 400, 'INVALID_REQUEST');
    expectError(await t.commit(rid, 1, { metrics: { tokens_input: -1 } }), 400, 'INVALID_REQUEST');
    expectError(await t.commit(rid, 1, { metrics: { model_version: 'm'.repeat(129) } }), 400, 'INVALID_REQUEST');
    expectError(await t.commit(rid, 1, { overage_policy: 'REJECT' }), 400, 'INVALID_REQUEST');
    expect(await ledger(t)).toEqual(before);
    expect((await getRes(t, rid)).status).toBe('ACTIVE');
  });
});
