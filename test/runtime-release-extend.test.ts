import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, USD, createTenant, idem, json, startHarness, expectError, nums, expectInvariant, sleep, getRes, ledger, type Harness, type TestTenant } from './helpers.js';

/**
 * Release and extend (runtime digest §2.3, §2.4, §3.8, §3.11; checklist §9 I, J), plus the
 * grace window for commit/release vs extend. The harness has its own key prefix, so no expiry
 * sweep from another file can touch these reservations while a test inspects them.
 */

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ keyPrefix: `cyt-relext-${randomBytes(4).toString('hex')}` });
});
afterAll(async () => h?.close());

function extend(t: TestTenant, rid: string, by: number, key = idem('x')) {
  return t.post(`/v1/reservations/${rid}/extend`, { idempotency_key: key, extend_by_ms: by });
}

async function reserveFull(t: TestTenant, amount: number, over: Record<string, unknown> = {}) {
  const r = await t.reserve(amount, over);
  expect(r.statusCode, r.body).toBe(200);
  return json(r) as { reservation_id: string; expires_at_ms: number; remaining_ttl_ms: number };
}

describe('release', () => {
  it('returns the full hold on every budgeted scope and records RELEASED with finalized_at_ms', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    const rid = await t.reserveOk(500);
    expect((await t.balance('workspace:prod')).reserved.amount).toBe(500);
    const r = await t.release(rid, { reason: 'cancelled' });
    expect(r.statusCode, r.body).toBe(200);
    expect(json(r)).toEqual({ status: 'RELEASED', released: { unit: USD, amount: 500 } });
    expect(await ledger(t)).toEqual(before);
    await expectInvariant(t);
    const d = await getRes(t, rid);
    expect(d.status).toBe('RELEASED');
    expect(Number.isInteger(d.finalized_at_ms)).toBe(true);
    expect(d.finalized_at_ms).toBeGreaterThanOrEqual(d.created_at_ms);
    expect(d).not.toHaveProperty('committed');
  });

  it('replay returns the same body without crediting again; a different reason → IDEMPOTENCY_MISMATCH; a new key → FINALIZED', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(500);
    const other = await t.reserveOk(250);
    const body = { idempotency_key: idem('rel'), reason: 'done' };
    const first = await t.post(`/v1/reservations/${rid}/release`, body);
    expect(first.statusCode).toBe(200);
    const after = await ledger(t);
    expect(after[`${t.scope('workspace:prod')}|${USD}`]).toEqual({ remaining: 99_750, reserved: 250, spent: 0, debt: 0, allocated: 100_000, over: false });
    const again = await t.post(`/v1/reservations/${rid}/release`, body);
    expect(again.statusCode).toBe(200);
    expect(json(again)).toEqual(json(first));
    expect(await ledger(t)).toEqual(after);
    expectError(await t.post(`/v1/reservations/${rid}/release`, { ...body, reason: 'other' }), 409, 'IDEMPOTENCY_MISMATCH');
    expectError(await t.release(rid), 409, 'RESERVATION_FINALIZED');
    expect(await ledger(t)).toEqual(after);
    expect((await getRes(t, other)).status).toBe('ACTIVE');
  });

  it('release of a COMMITTED reservation → FINALIZED; unknown → 404; bad bodies → 400; nothing changes', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(500);
    expect((await t.commit(rid, 200)).statusCode).toBe(200);
    const active = await t.reserveOk(100);
    const before = await ledger(t);
    expectError(await t.release(rid), 409, 'RESERVATION_FINALIZED');
    expectError(await t.release('does-not-exist-123'), 404, 'NOT_FOUND');
    expectError(await t.release(`rsv_${t.id}_${'a'.repeat(24)}`), 404, 'NOT_FOUND');
    expectError(await t.release(active, { reason: 'r'.repeat(257) }), 400, 'INVALID_REQUEST');
    expectError(await t.post(`/v1/reservations/${active}/release`, {}), 400, 'INVALID_REQUEST');
    expect(await ledger(t)).toEqual(before);
    expect((await getRes(t, active)).status).toBe('ACTIVE');
    expect((await getRes(t, rid)).committed).toEqual({ unit: USD, amount: 200 });
  });

  it('the admin key may force-release any tenant reservation', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    const rid = await t.reserveOk(700);
    const r = await h.runtime.inject({
      method: 'POST',
      url: `/v1/reservations/${rid}/release`,
      headers: { 'x-admin-api-key': ADMIN_KEY },
      payload: { idempotency_key: idem('adm'), reason: '[INCIDENT_FORCE_RELEASE] test' } });
    expect(r.statusCode, r.body).toBe(200);
    expect(json(r)).toEqual({ status: 'RELEASED', released: { unit: USD, amount: 700 } });
    expect(await ledger(t)).toEqual(before);
  });
});

describe('extend', () => {
  it('adds extend_by_ms to the current expires_at_ms and changes nothing else', async () => {
    const t = await createTenant(h);
    const r = await reserveFull(t, 300, { ttl_ms: 60_000, metadata: { k: 'v' } });
    const X = r.expires_at_ms;
    const beforeLedger = await ledger(t);
    const beforeDetail = await getRes(t, r.reservation_id);
    const e = await extend(t, r.reservation_id, 1000);
    expect(e.statusCode, e.body).toBe(200);
    const b = json(e);
    expect(Object.keys(b).sort()).toEqual(['expires_at_ms', 'remaining_ttl_ms', 'status']);
    expect(b.status).toBe('ACTIVE');
    expect(b.expires_at_ms).toBe(X + 1000);
    expect(b.remaining_ttl_ms).toBeLessThanOrEqual(61_000);
    expect(b.remaining_ttl_ms).toBeGreaterThan(50_000);
    expect(await getRes(t, r.reservation_id)).toEqual({ ...beforeDetail, expires_at_ms: X + 1000 });
    expect(await ledger(t)).toEqual(beforeLedger);

    // Relative to the current expiry each time, not to request time.
    const e2 = await extend(t, r.reservation_id, 2500);
    expect(json(e2).expires_at_ms).toBe(X + 3500);
    expect((await getRes(t, r.reservation_id)).expires_at_ms).toBe(X + 3500);
    expect(await ledger(t)).toEqual(beforeLedger);
  });

  it('replay with the same key returns the same expiry and applies once; different extend_by_ms → IDEMPOTENCY_MISMATCH', async () => {
    const t = await createTenant(h);
    const r = await reserveFull(t, 100);
    const k = idem('x');
    const first = json(await extend(t, r.reservation_id, 1000, k));
    const again = await extend(t, r.reservation_id, 1000, k);
    expect(again.statusCode).toBe(200);
    expect(json(again).expires_at_ms).toBe(first.expires_at_ms);
    expect(json(again).status).toBe('ACTIVE');
    expect((await getRes(t, r.reservation_id)).expires_at_ms).toBe(r.expires_at_ms + 1000);
    const before = await ledger(t);
    expectError(await extend(t, r.reservation_id, 2000, k), 409, 'IDEMPOTENCY_MISMATCH');
    expect((await getRes(t, r.reservation_id)).expires_at_ms).toBe(r.expires_at_ms + 1000);
    expect(await ledger(t)).toEqual(before);
  });

  it('MAX_EXTENSIONS_EXCEEDED after 10 extensions by default; expiry stays put', async () => {
    const t = await createTenant(h);
    const r = await reserveFull(t, 100);
    for (let i = 1; i <= 10; i += 1) {
      const e = await extend(t, r.reservation_id, 100);
      expect(e.statusCode, e.body).toBe(200);
      expect(json(e).expires_at_ms).toBe(r.expires_at_ms + i * 100);
    }
    const before = await ledger(t);
    expectError(await extend(t, r.reservation_id, 100), 409, 'MAX_EXTENSIONS_EXCEEDED');
    expect((await getRes(t, r.reservation_id)).expires_at_ms).toBe(r.expires_at_ms + 1000);
    expect(await ledger(t)).toEqual(before);
    // The reservation itself is still usable.
    expect((await t.commit(r.reservation_id, 100)).statusCode).toBe(200);
  });

  it('tenant max_reservation_extensions overrides the default (2, and 0 disables extension)', async () => {
    const two = await createTenant(h, { fields: { max_reservation_extensions: 2 } });
    const r = await reserveFull(two, 100);
    expect((await extend(two, r.reservation_id, 500)).statusCode).toBe(200);
    expect((await extend(two, r.reservation_id, 500)).statusCode).toBe(200);
    const before = await ledger(two);
    expectError(await extend(two, r.reservation_id, 500), 409, 'MAX_EXTENSIONS_EXCEEDED');
    expect((await getRes(two, r.reservation_id)).expires_at_ms).toBe(r.expires_at_ms + 1000);
    expect(await ledger(two)).toEqual(before);

    const zero = await createTenant(h, { fields: { max_reservation_extensions: 0 } });
    const z = await reserveFull(zero, 100);
    const beforeZero = await ledger(zero);
    expectError(await extend(zero, z.reservation_id, 500), 409, 'MAX_EXTENSIONS_EXCEEDED');
    expect((await getRes(zero, z.reservation_id)).expires_at_ms).toBe(z.expires_at_ms);
    expect(await ledger(zero)).toEqual(beforeZero);
  });

  it('extend of a COMMITTED or RELEASED reservation → FINALIZED; unknown → 404; bad extend_by_ms → 400', async () => {
    const t = await createTenant(h);
    const c = await t.reserveOk(100);
    expect((await t.commit(c, 100)).statusCode).toBe(200);
    const r = await t.reserveOk(100);
    expect((await t.release(r)).statusCode).toBe(200);
    const a = await reserveFull(t, 100);
    const before = await ledger(t);
    expectError(await extend(t, c, 1000), 409, 'RESERVATION_FINALIZED');
    expectError(await extend(t, r, 1000), 409, 'RESERVATION_FINALIZED');
    expectError(await extend(t, 'does-not-exist-123', 1000), 404, 'NOT_FOUND');
    expectError(await extend(t, a.reservation_id, 0), 400, 'INVALID_REQUEST');
    expectError(await extend(t, a.reservation_id, 86_400_001), 400, 'INVALID_REQUEST');
    expectError(await t.post(`/v1/reservations/${a.reservation_id}/extend`, { idempotency_key: idem('x') }), 400, 'INVALID_REQUEST');
    expect(await ledger(t)).toEqual(before);
    expect((await getRes(t, a.reservation_id)).expires_at_ms).toBe(a.expires_at_ms);
  });
});

describe('grace window (one short wait)', () => {
  it('past expires_at: extend → 410 even inside grace; commit/release inside grace → 200; after grace → 410', async () => {
    const t = await createTenant(h);
    const g1 = await reserveFull(t, 100, { ttl_ms: 1000, grace_period_ms: 5000 });
    const g2 = await reserveFull(t, 200, { ttl_ms: 1000, grace_period_ms: 5000 });
    const z1 = await reserveFull(t, 300, { ttl_ms: 1000, grace_period_ms: 0 });
    const z2 = await reserveFull(t, 400, { ttl_ms: 1000, grace_period_ms: 0 });
    const z3 = await reserveFull(t, 500, { ttl_ms: 1000, grace_period_ms: 0 });
    const ctl = await reserveFull(t, 600, { ttl_ms: 60_000 });
    const kept = await reserveFull(t, 700, { ttl_ms: 1000, grace_period_ms: 0 });
    // Extended before its expiry: it outlives the wait.
    const ke = await extend(t, kept.reservation_id, 5000);
    expect(json(ke).expires_at_ms).toBe(kept.expires_at_ms + 5000);

    await sleep(1200);

    // Inside grace: still ACTIVE on GET, but extend refuses (grace does not apply to extend).
    let before = await ledger(t);
    expectError(await extend(t, g1.reservation_id, 10_000), 410, 'RESERVATION_EXPIRED');
    expect(await ledger(t)).toEqual(before);
    const d1 = await getRes(t, g1.reservation_id);
    expect(d1.status).toBe('ACTIVE');
    expect(d1.expires_at_ms).toBe(g1.expires_at_ms);

    const c1 = await t.commit(g1.reservation_id, 80);
    expect(c1.statusCode, c1.body).toBe(200);
    expect(json(c1)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 80 }, released: { unit: USD, amount: 20 } });
    const r2 = await t.release(g2.reservation_id);
    expect(r2.statusCode, r2.body).toBe(200);
    expect(json(r2)).toEqual({ status: 'RELEASED', released: { unit: USD, amount: 200 } });

    // Past expires_at + grace (grace 0): commit, release and extend are all 410, nothing moves.
    before = await ledger(t);
    expectError(await t.commit(z1.reservation_id, 300), 410, 'RESERVATION_EXPIRED');
    expectError(await t.release(z1.reservation_id), 410, 'RESERVATION_EXPIRED');
    expectError(await t.release(z2.reservation_id), 410, 'RESERVATION_EXPIRED');
    expectError(await extend(t, z3.reservation_id, 10_000), 410, 'RESERVATION_EXPIRED');
    expect(await ledger(t)).toEqual(before);

    // Control and extended reservations still work.
    expect((await extend(t, ctl.reservation_id, 1000)).statusCode).toBe(200);
    const ck = await t.commit(kept.reservation_id, 700);
    expect(ck.statusCode, ck.body).toBe(200);

    // Holds of z1..z3 (1200) and ctl (600) remain until the sweep; spent 80 + 700.
    expect(nums(await t.balance('workspace:prod'))).toEqual({ allocated: 100_000, remaining: 100_000 - 780 - 1800, reserved: 1800, spent: 780, debt: 0, over: false });
    await expectInvariant(t);
  });
});
