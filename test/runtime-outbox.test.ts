import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { USD, createTenant, getRes, idem, json, startHarness, type Harness, type TestTenant } from './helpers.js';

/**
 * Ledger scripts append the events of runtime digest Appendix A to the tenant's outbox stream
 * inside the same script as the mutation: exactly once, and never again on a replay.
 */
let h: Harness;
beforeAll(async () => {
  h = await startHarness({ keyPrefix: `cyt-outbox-${randomBytes(4).toString('hex')}` });
});
afterAll(async () => h.close());

async function outbox(t: TestTenant): Promise<any[]> {
  const entries = await h.system.redis.xrange(h.system.keys.outbox(t.id), '-', '+');
  return entries.map(([, fields]) => JSON.parse(fields[1]!));
}

async function ofType(t: TestTenant, type: string): Promise<any[]> {
  return (await outbox(t)).filter((e) => e.event_type === type);
}

describe('runtime events in the outbox', () => {
  it('a live 409 denial and a dry-run DENY each append one reservation.denied; a dry-run replay appends none', async () => {
    const t = await createTenant(h);
    const live = await t.reserve(200_000);
    expect(live.statusCode).toBe(409);
    const dryBody = t.reserveBody(200_000, { dry_run: true });
    const dry = await t.post('/v1/reservations', dryBody);
    expect(json(dry).decision).toBe('DENY');
    const again = await t.post('/v1/reservations', dryBody);
    expect(again.body).toBe(dry.body);

    const denied = await ofType(t, 'reservation.denied');
    expect(denied).toHaveLength(2);
    expect(denied[0]).toMatchObject({
      event_type: 'reservation.denied',
      category: 'reservation',
      tenant_id: t.id,
      scope: t.scope('workspace:prod'),
      actor: { type: 'api_key' },
      request_id: live.headers['x-request-id'],
      trace_id: live.headers['x-cycles-trace-id'],
      data: { reason_code: 'BUDGET_EXCEEDED', requested_amount: 200_000, unit: USD, remaining: 100_000, dry_run: false } });
    expect(denied[1].data).toMatchObject({ reason_code: 'BUDGET_EXCEEDED', dry_run: true });
    expect(new Set(denied.map((e) => e.event_id)).size).toBe(2);
  });

  it('an overdraft commit appends commit_overage, debt_incurred and exhausted once; its replay appends nothing', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:w', 1000, { overdraft: 10_000 }]] });
    const rid = await t.reserveOk(100, { ws: 'w', overage_policy: 'ALLOW_WITH_OVERDRAFT' });
    const body = { idempotency_key: idem('c'), actual: { unit: USD, amount: 1050 } };
    const first = await t.post(`/v1/reservations/${rid}/commit`, body);
    expect(first.statusCode).toBe(200);
    const before = await outbox(t);
    const replay = await t.post(`/v1/reservations/${rid}/commit`, body);
    expect(replay.body).toBe(first.body);
    expect(await outbox(t)).toEqual(before);

    const overage = before.filter((e) => e.event_type === 'reservation.commit_overage');
    expect(overage).toHaveLength(1);
    expect(overage[0].data).toMatchObject({
      reservation_id: rid,
      estimated_amount: 100,
      actual_amount: 1050,
      charged_amount: 1050,
      overage: 950,
      overage_policy: 'ALLOW_WITH_OVERDRAFT',
      debt_incurred: true });
    const debt = before.filter((e) => e.event_type === 'budget.debt_incurred');
    expect(debt).toHaveLength(1);
    expect(debt[0]).toMatchObject({ scope: t.scope('workspace:w'), data: { debt_incurred: 50, total_debt: 50, overdraft_limit: 10_000 } });
    const exhausted = before.filter((e) => e.event_type === 'budget.exhausted');
    expect(exhausted.map((e) => e.scope)).toEqual([t.scope('workspace:w')]);
    expect(before.filter((e) => e.event_type === 'budget.over_limit_entered')).toEqual([]);
  });

  it('a capped commit appends budget.over_limit_entered for the scope that could not cover the overage', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:cap', 200]] });
    const rid = await t.reserveOk(200, { ws: 'cap' });
    expect((await t.commit(rid, 201)).statusCode).toBe(200);
    const entered = await ofType(t, 'budget.over_limit_entered');
    expect(entered.map((e) => e.scope)).toEqual([t.scope('workspace:cap')]);
    expect(entered[0].data).toMatchObject({ is_over_limit: true, debt: 0 });
  });

  it('concurrent identical commits append their events exactly once', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:c', 1000]] });
    const rid = await t.reserveOk(100, { ws: 'c' });
    const body = { idempotency_key: idem('c'), actual: { unit: USD, amount: 150 } };
    const answers = await Promise.all(Array.from({ length: 20 }, () => t.post(`/v1/reservations/${rid}/commit`, body)));
    expect(answers.every((a) => a.statusCode === 200 && a.body === answers[0]!.body)).toBe(true);
    expect(await ofType(t, 'reservation.commit_overage')).toHaveLength(1);
  });

  it('the sweep appends one reservation.expired per expired reservation', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(300, { ttl_ms: 1000, grace_period_ms: 0 });
    const d = await getRes(t, rid);
    await new Promise((r) => setTimeout(r, 1100));
    await h.system.sweep.sweepOnce();
    await h.system.sweep.sweepOnce();
    const expired = await ofType(t, 'reservation.expired');
    expect(expired).toHaveLength(1);
    expect(expired[0]).toMatchObject({
      scope: t.scope('workspace:prod'),
      actor: { type: 'system' },
      data: { reservation_id: rid, unit: USD, estimated_amount: 300, ttl_ms: 1000, extensions_used: 0 } });
    // expired_at is the reservation's deadline (as the reference reports it), ISO-8601 like created_at.
    expect(Date.parse(expired[0].data.expired_at)).toBe(d.expires_at_ms);
    expect(Date.parse(expired[0].data.created_at)).toBe(d.created_at_ms);
  });

  it('a successful reserve, release and plain commit append nothing', async () => {
    const t = await createTenant(h);
    const r1 = await t.reserveOk(100);
    expect((await t.release(r1)).statusCode).toBe(200);
    const r2 = await t.reserveOk(100);
    expect((await t.commit(r2, 80)).statusCode).toBe(200);
    // Only the provisioning events of the admin plane are there.
    expect((await outbox(t)).filter((e) => e.source !== 'cycles-admin')).toEqual([]);
  });
});
