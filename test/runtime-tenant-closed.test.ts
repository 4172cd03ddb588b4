import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, USD, createTenant, idem, json, startHarness, expectError, sleep, ledger, type Harness, type TestTenant } from './helpers.js';

/**
 * Closed tenant guard (runtime digest §7 rule 7, §2.x TENANT_CLOSED rows; checklist §9 O):
 * fresh persisting requests → 409 TENANT_CLOSED (ahead of FINALIZED/EXPIRED), non-persisting
 * surfaces → 200 DENY TENANT_CLOSED, replays of pre-close successes → their stored responses,
 * reads stay available.
 */

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ keyPrefix: `cyt-closed-${randomBytes(4).toString('hex')}` });
});
afterAll(async () => h?.close());

const ADMIN = { 'x-admin-api-key': ADMIN_KEY };

/**
 * Flips the tenant to CLOSED without running the close cascade, i.e. the state every tenant is in
 * between the flip and the end of its cascade (ADR 0015, Mode B): the runtime guard must hold on
 * its own, with the tenant's keys, reservations and budgets still untouched. (The cascade itself
 * is tested in tenant-close.test.ts.)
 */
async function close(t: TestTenant) {
  const e = { eventIdBase: 'evt_0000000000', requestId: 'test', traceId: '0'.repeat(31) + '1', actorJson: '{"type":"admin"}' };
  const r = await h.system.adminStore.updateTenant(t.id, 'CLOSED', new Date().toISOString(), {}, [], e);
  expect(r.result).toBe('OK');
  const g = await h.admin.inject({ method: 'GET', url: `/v1/admin/tenants/${t.id}`, headers: ADMIN });
  expect(json(g).status).toBe('CLOSED');
}

describe('closed tenant', () => {
  it('fresh live mutations → 409 TENANT_CLOSED with no ledger change', async () => {
    const t = await createTenant(h);
    const active = await t.reserveOk(400);
    await close(t);
    const before = await ledger(t);
    expect(before[`${t.scope('workspace:prod')}|${USD}`].reserved).toBe(400);

    expectError(await t.reserve(1), 409, 'TENANT_CLOSED');
    expectError(await t.commit(active, 100), 409, 'TENANT_CLOSED');
    expectError(await t.release(active), 409, 'TENANT_CLOSED');
    expectError(await t.post(`/v1/reservations/${active}/extend`, { idempotency_key: idem('x'), extend_by_ms: 1000 }), 409, 'TENANT_CLOSED');
    expectError(await t.post('/v1/events', t.eventBody(10)), 409, 'TENANT_CLOSED');
    // Even a reserve that would be 409 BUDGET_EXCEEDED or 404 is reported as TENANT_CLOSED.
    expectError(await t.reserve(10_000_000), 409, 'TENANT_CLOSED');
    expect(await ledger(t)).toEqual(before);

    // Reads stay available.
    const g = await t.get(`/v1/reservations/${active}`);
    expect(g.statusCode).toBe(200);
    expect(json(g).status).toBe('ACTIVE');
    const l = await t.get('/v1/reservations');
    expect(l.statusCode).toBe(200);
    expect(json(l).reservations.map((r: any) => r.reservation_id)).toEqual([active]);
    expect((await t.get(`/v1/balances?tenant=${t.id}`)).statusCode).toBe(200);
  });

  it('TENANT_CLOSED takes precedence over RESERVATION_FINALIZED', async () => {
    const t = await createTenant(h);
    const committed = await t.reserveOk(100);
    expect((await t.commit(committed, 100)).statusCode).toBe(200);
    const released = await t.reserveOk(100);
    expect((await t.release(released)).statusCode).toBe(200);
    await close(t);
    const before = await ledger(t);
    expectError(await t.commit(committed, 100), 409, 'TENANT_CLOSED');
    expectError(await t.release(committed), 409, 'TENANT_CLOSED');
    expectError(await t.commit(released, 100), 409, 'TENANT_CLOSED');
    expectError(await t.post(`/v1/reservations/${released}/extend`, { idempotency_key: idem('x'), extend_by_ms: 1000 }), 409, 'TENANT_CLOSED');
    expect(await ledger(t)).toEqual(before);
  });

  it('dry_run and decide → 200 DENY TENANT_CLOSED with affected_scopes, never 409, nothing changes', async () => {
    const t = await createTenant(h);
    await close(t);
    const before = await ledger(t);
    const dry = await t.reserve(10, { dry_run: true });
    expect(dry.statusCode, dry.body).toBe(200);
    expect(json(dry)).toEqual({
      decision: 'DENY',
      reason_code: 'TENANT_CLOSED',
      scope_path: t.scope('workspace:prod'),
      affected_scopes: [t.scope(), t.scope('workspace:prod')] });
    const dec = await t.post('/v1/decide', t.decideBody(10));
    expect(dec.statusCode, dec.body).toBe(200);
    expect(json(dec)).toEqual({ decision: 'DENY', reason_code: 'TENANT_CLOSED', affected_scopes: [t.scope(), t.scope('workspace:prod')] });
    expect(await ledger(t)).toEqual(before);
    expect(json(await t.get('/v1/reservations')).reservations).toEqual([]);
  });

  it('replays of requests that succeeded before the close return their stored responses', async () => {
    const t = await createTenant(h);
    const resBody = t.reserveBody(300);
    const res1 = await t.post('/v1/reservations', resBody);
    const rid = json(res1).reservation_id as string;
    const committedRid = await t.reserveOk(1000);
    const commitBody = { idempotency_key: idem('c'), actual: { unit: USD, amount: 600 } };
    const c1 = await t.post(`/v1/reservations/${committedRid}/commit`, commitBody);
    const releasedRid = await t.reserveOk(200);
    const releaseBody = { idempotency_key: idem('r'), reason: 'done' };
    const r1 = await t.post(`/v1/reservations/${releasedRid}/release`, releaseBody);
    const extendBody = { idempotency_key: idem('x'), extend_by_ms: 2000 };
    const x1 = await t.post(`/v1/reservations/${rid}/extend`, extendBody);
    const ev = t.eventBody(250);
    const e1 = await t.post('/v1/events', ev);
    const dryBody = t.reserveBody(50, { dry_run: true });
    const d1 = await t.post('/v1/reservations', dryBody);
    const decBody = t.decideBody(50);
    const k1 = await t.post('/v1/decide', decBody);
    for (const r of [res1, c1, r1, x1, d1, k1]) expect(r.statusCode, r.body).toBe(200);
    expect(e1.statusCode).toBe(201);

    await close(t);
    const before = await ledger(t);

    const c2 = await t.post(`/v1/reservations/${committedRid}/commit`, commitBody);
    expect(c2.statusCode).toBe(200);
    expect(c2.body).toBe(c1.body);
    const r2 = await t.post(`/v1/reservations/${releasedRid}/release`, releaseBody);
    expect(r2.statusCode).toBe(200);
    expect(r2.body).toBe(r1.body);
    const e2 = await t.post('/v1/events', ev);
    expect(e2.statusCode).toBe(201);
    expect(e2.body).toBe(e1.body);
    const x2 = await t.post(`/v1/reservations/${rid}/extend`, extendBody);
    expect(x2.statusCode).toBe(200);
    expect(json(x2).expires_at_ms).toBe(json(x1).expires_at_ms);
    expect(json(x2).status).toBe('ACTIVE');
    const res2 = await t.post('/v1/reservations', resBody);
    expect(res2.statusCode).toBe(200);
    expect(json(res2).reservation_id).toBe(rid);
    expect(json(res2).expires_at_ms).toBe(json(res1).expires_at_ms);
    const d2 = await t.post('/v1/reservations', dryBody);
    expect(d2.statusCode).toBe(200);
    expect(d2.body).toBe(d1.body);
    expect(json(d2).decision).toBe('ALLOW');
    const k2 = await t.post('/v1/decide', decBody);
    expect(k2.statusCode).toBe(200);
    expect(k2.body).toBe(k1.body);
    expect(json(k2).decision).toBe('ALLOW');
    expect(await ledger(t)).toEqual(before);

    // A replay with a changed body is still a mismatch, not a replay.
    expectError(await t.post(`/v1/reservations/${committedRid}/commit`, { ...commitBody, actual: { unit: USD, amount: 700 } }), 409, 'IDEMPOTENCY_MISMATCH');
    expect(await ledger(t)).toEqual(before);
  });

  it('TENANT_CLOSED takes precedence over RESERVATION_EXPIRED (one short wait)', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(100, { ttl_ms: 1000, grace_period_ms: 0 });
    const done = await t.reserveOk(200, { ttl_ms: 1000, grace_period_ms: 0 });
    const commitBody = { idempotency_key: idem('c'), actual: { unit: USD, amount: 150 } };
    const c1 = await t.post(`/v1/reservations/${done}/commit`, commitBody);
    expect(c1.statusCode).toBe(200);
    await sleep(1100);
    // Before the close the same call is 410; a replay of a commit that succeeded in time is still 200.
    const expired = await ledger(t);
    expectError(await t.commit(rid, 100), 410, 'RESERVATION_EXPIRED');
    expect(await ledger(t)).toEqual(expired);
    const c2 = await t.post(`/v1/reservations/${done}/commit`, commitBody);
    expect(c2.statusCode).toBe(200);
    expect(c2.body).toBe(c1.body);
    await close(t);
    const before = await ledger(t);
    expect(before).toEqual(expired);
    const c3 = await t.post(`/v1/reservations/${done}/commit`, commitBody);
    expect(c3.statusCode).toBe(200);
    expect(c3.body).toBe(c1.body);
    expectError(await t.commit(rid, 100), 409, 'TENANT_CLOSED');
    expectError(await t.release(rid), 409, 'TENANT_CLOSED');
    expectError(await t.post(`/v1/reservations/${rid}/extend`, { idempotency_key: idem('x'), extend_by_ms: 1000 }), 409, 'TENANT_CLOSED');
    expect(await ledger(t)).toEqual(before);
  });
});
