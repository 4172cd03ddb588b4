import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, USD, createTenant, idem, json, startHarness, expectError, sleep, ledger, type Harness, type TestTenant } from './helpers.js';

/**
 * Idempotency (runtime digest §2.0 "Idempotency keys/scope", §2.1–§2.4 and §2.9 idempotency
 * notes, §10.3; checklist §9 G and the replay items of H, I, J, N).
 */

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ keyPrefix: `cyt-idem-${randomBytes(4).toString('hex')}` });
});
afterAll(async () => h?.close());

const JSON_CT = { 'content-type': 'application/json' };

const prodKey = (t: TestTenant) => `${t.scope('workspace:prod')}|${USD}`;

function withoutTtl(b: any) {
  const { remaining_ttl_ms: _ignored, ...rest } = b;
  return rest;
}

describe('reserve idempotency', () => {
  it('replay returns the same reservation_id and expires_at_ms, recomputes remaining_ttl_ms, holds once', async () => {
    const t = await createTenant(h);
    const body = t.reserveBody(100);
    const r1 = await t.post('/v1/reservations', body);
    expect(r1.statusCode).toBe(200);
    const b1 = json(r1);
    const held = await ledger(t);
    await sleep(60);
    const r2 = await t.post('/v1/reservations', body);
    expect(r2.statusCode).toBe(200);
    const b2 = json(r2);
    expect(withoutTtl(b2)).toEqual(withoutTtl(b1));
    expect(b2.reservation_id).toBe(b1.reservation_id);
    expect(b2.expires_at_ms).toBe(b1.expires_at_ms);
    expect(b2.remaining_ttl_ms).toBeLessThanOrEqual(b1.remaining_ttl_ms - 50);
    expect(b2.remaining_ttl_ms).toBeGreaterThan(b1.remaining_ttl_ms - 20_000);
    expect(await ledger(t)).toEqual(held);
    expect(held[prodKey(t)].reserved).toBe(100);
    expect(json(await t.get('/v1/reservations')).reservations.length).toBe(1);

    // Once the reservation is no longer ACTIVE the replay reports remaining_ttl_ms 0.
    expect((await t.commit(b1.reservation_id, 100)).statusCode).toBe(200);
    const after = await ledger(t);
    const r3 = await t.post('/v1/reservations', body);
    expect(r3.statusCode).toBe(200);
    expect(json(r3)).toEqual({ ...withoutTtl(b1), remaining_ttl_ms: 0 });
    expect(await ledger(t)).toEqual(after);
  });

  it('same key with a different payload → 409 IDEMPOTENCY_MISMATCH and nothing changes', async () => {
    const t = await createTenant(h);
    const body = t.reserveBody(100);
    expect((await t.post('/v1/reservations', body)).statusCode).toBe(200);
    const before = await ledger(t);
    expectError(await t.post('/v1/reservations', { ...body, estimate: { unit: USD, amount: 200 } }), 409, 'IDEMPOTENCY_MISMATCH');
    expectError(await t.post('/v1/reservations', { ...body, metadata: { k: 'v' } }), 409, 'IDEMPOTENCY_MISMATCH');
    expectError(await t.post('/v1/reservations', { ...body, ttl_ms: 30_000 }), 409, 'IDEMPOTENCY_MISMATCH');
    expect(await ledger(t)).toEqual(before);
    expect(json(await t.get('/v1/reservations')).reservations.length).toBe(1);
  });

  it('reordered JSON keys and different whitespace count as the same payload', async () => {
    const t = await createTenant(h);
    const k = idem('ord');
    const a = `{"idempotency_key":"${k}","subject":{"tenant":"${t.id}","workspace":"prod"},"action":{"kind":"llm.completion","name":"m"},"estimate":{"unit":"${USD}","amount":100},"metadata":{"x":1,"y":[1,2]}}`;
    const b = `{
      "metadata": { "y": [1, 2], "x": 1 },
      "estimate": { "amount": 100, "unit": "${USD}" },
      "action": { "name": "m", "kind": "llm.completion" },
      "subject": { "workspace": "prod", "tenant": "${t.id}" },
      "idempotency_key": "${k}"
    }`;
    const r1 = await t.post('/v1/reservations', a, JSON_CT);
    expect(r1.statusCode, r1.body).toBe(200);
    const held = await ledger(t);
    const r2 = await t.post('/v1/reservations', b, JSON_CT);
    expect(r2.statusCode, r2.body).toBe(200);
    expect(withoutTtl(json(r2))).toEqual(withoutTtl(json(r1)));
    expect(await ledger(t)).toEqual(held);
    // Array order is significant: that is a different payload.
    const c = a.replace('[1,2]', '[2,1]');
    expectError(await t.post('/v1/reservations', c, JSON_CT), 409, 'IDEMPOTENCY_MISMATCH');
    expect(await ledger(t)).toEqual(held);
  });

  it('a failed original (409) is evaluated fresh on retry with the same key', async () => {
    const t = await createTenant(h);
    const body = t.reserveBody(150_000);
    const before = await ledger(t);
    expectError(await t.post('/v1/reservations', body), 409, 'BUDGET_EXCEEDED');
    expectError(await t.post('/v1/reservations', body), 409, 'BUDGET_EXCEEDED');
    expect(await ledger(t)).toEqual(before);
    await t.fund('workspace:prod', 'CREDIT', 100_000);
    const ok = await t.post('/v1/reservations', body);
    expect(ok.statusCode, ok.body).toBe(200);
    expect(json(ok).decision).toBe('ALLOW');
    expect((await ledger(t))[prodKey(t)]).toEqual({ remaining: 50_000, reserved: 150_000, spent: 0, debt: 0, allocated: 200_000, over: false });
  });

  it('live then dry_run with the same key → 409; dry_run then live → 409; a dry_run replay returns its stored body after balances change', async () => {
    const t = await createTenant(h);
    const live = t.reserveBody(100);
    expect((await t.post('/v1/reservations', live)).statusCode).toBe(200);
    const before = await ledger(t);
    expectError(await t.post('/v1/reservations', { ...live, dry_run: true }), 409, 'IDEMPOTENCY_MISMATCH');
    expect(await ledger(t)).toEqual(before);

    const dry = t.reserveBody(60_000, { dry_run: true });
    const d1 = await t.post('/v1/reservations', dry);
    expect(json(d1).decision).toBe('ALLOW');
    expectError(await t.post('/v1/reservations', { ...dry, dry_run: false }), 409, 'IDEMPOTENCY_MISMATCH');
    expect(await ledger(t)).toEqual(before);

    // Use up the workspace: a fresh dry-run now denies, the replay still says ALLOW.
    expect((await t.reserve(60_000)).statusCode).toBe(200);
    expect(json(await t.reserve(60_000, { dry_run: true })).reason_code).toBe('BUDGET_EXCEEDED');
    const d2 = await t.post('/v1/reservations', dry);
    expect(d2.statusCode).toBe(200);
    expect(d2.body).toBe(d1.body);
  });

  it('the same key in two tenants is independent', async () => {
    const a = await createTenant(h);
    const b = await createTenant(h);
    const k = 'same-key';
    const ra = await a.reserve(100, { idempotency_key: k });
    const rb = await b.reserve(300, { idempotency_key: k });
    expect(ra.statusCode).toBe(200);
    expect(rb.statusCode).toBe(200);
    expect(json(ra).reservation_id).not.toBe(json(rb).reservation_id);
    expect((await ledger(a))[prodKey(a)].reserved).toBe(100);
    expect((await ledger(b))[prodKey(b)].reserved).toBe(300);
  });

  it('X-Idempotency-Key header: equal to the body key is fine; different → 400 and nothing is created', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    const body = t.reserveBody(100);
    expectError(await t.post('/v1/reservations', body, { 'x-idempotency-key': 'something-else' }), 400, 'INVALID_REQUEST');
    expect(await ledger(t)).toEqual(before);
    expect(json(await t.get(`/v1/reservations?idempotency_key=${body.idempotency_key}`)).reservations).toEqual([]);
    const ok = await t.post('/v1/reservations', body, { 'x-idempotency-key': body.idempotency_key });
    expect(ok.statusCode).toBe(200);
  });

  it('20 concurrent identical reserves create one reservation; reserved rises once', async () => {
    const t = await createTenant(h);
    const body = t.reserveBody(100);
    const results = await Promise.all(Array.from({ length: 20 }, () => t.post('/v1/reservations', body)));
    for (const r of results) expect(r.statusCode, r.body).toBe(200);
    const ids = new Set(results.map((r) => json(r).reservation_id));
    expect(ids.size).toBe(1);
    expect(new Set(results.map((r) => json(r).expires_at_ms)).size).toBe(1);
    const l = await ledger(t);
    expect(l[prodKey(t)]).toEqual({ remaining: 99_900, reserved: 100, spent: 0, debt: 0, allocated: 100_000, over: false });
    expect(l[`${t.scope()}|${USD}`].reserved).toBe(100);
    expect(json(await t.get('/v1/reservations')).reservations.length).toBe(1);
  });
});

describe('commit / release / extend idempotency', () => {
  it('commit replay returns the identical body; different actual → 409 mismatch; new key → FINALIZED', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(1000);
    const body = { idempotency_key: idem('c'), actual: { unit: USD, amount: 600 }, metadata: { a: 'b' } };
    const c1 = await t.post(`/v1/reservations/${rid}/commit`, body);
    expect(c1.statusCode).toBe(200);
    const after = await ledger(t);
    const c2 = await t.post(`/v1/reservations/${rid}/commit`, body);
    expect(c2.statusCode).toBe(200);
    expect(c2.body).toBe(c1.body);
    expect(await ledger(t)).toEqual(after);
    const reordered = `{ "metadata": {"a":"b"}, "actual": {"amount":600,"unit":"${USD}"}, "idempotency_key": "${body.idempotency_key}" }`;
    const c3 = await t.post(`/v1/reservations/${rid}/commit`, reordered, JSON_CT);
    expect(c3.statusCode, c3.body).toBe(200);
    expect(c3.body).toBe(c1.body);
    expect(await ledger(t)).toEqual(after);
    expectError(await t.post(`/v1/reservations/${rid}/commit`, { ...body, actual: { unit: USD, amount: 700 } }), 409, 'IDEMPOTENCY_MISMATCH');
    expectError(await t.commit(rid, 600), 409, 'RESERVATION_FINALIZED');
    expect(await ledger(t)).toEqual(after);
    expect(after[prodKey(t)]).toEqual({ remaining: 99_400, reserved: 0, spent: 600, debt: 0, allocated: 100_000, over: false });
  });

  it('20 concurrent identical commits settle once', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(1000);
    const body = { idempotency_key: idem('c'), actual: { unit: USD, amount: 600 } };
    const results = await Promise.all(Array.from({ length: 20 }, () => t.post(`/v1/reservations/${rid}/commit`, body)));
    for (const r of results) {
      expect(r.statusCode, r.body).toBe(200);
      expect(json(r)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 600 }, released: { unit: USD, amount: 400 } });
    }
    const l = await ledger(t);
    expect(l[prodKey(t)]).toEqual({ remaining: 99_400, reserved: 0, spent: 600, debt: 0, allocated: 100_000, over: false });
    expect(l[`${t.scope()}|${USD}`]).toEqual({ remaining: 999_400, reserved: 0, spent: 600, debt: 0, allocated: 1_000_000, over: false });
  });

  it('20 concurrent identical releases credit once; 20 concurrent identical extends extend once', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    const rid = await t.reserveOk(500);
    const rel = { idempotency_key: idem('r') };
    const rs = await Promise.all(Array.from({ length: 20 }, () => t.post(`/v1/reservations/${rid}/release`, rel)));
    for (const r of rs) {
      expect(r.statusCode, r.body).toBe(200);
      expect(json(r)).toEqual({ status: 'RELEASED', released: { unit: USD, amount: 500 } });
    }
    expect(await ledger(t)).toEqual(before);

    const r2 = json(await t.reserve(100));
    const ext = { idempotency_key: idem('x'), extend_by_ms: 1000 };
    const es = await Promise.all(Array.from({ length: 20 }, () => t.post(`/v1/reservations/${r2.reservation_id}/extend`, ext)));
    for (const e of es) {
      expect(e.statusCode, e.body).toBe(200);
      expect(json(e).expires_at_ms).toBe(r2.expires_at_ms + 1000);
    }
    expect(json(await t.get(`/v1/reservations/${r2.reservation_id}`)).expires_at_ms).toBe(r2.expires_at_ms + 1000);
  });

  it('release replay returns the identical body and credits once; a different reason → 409', async () => {
    const t = await createTenant(h);
    const before = await ledger(t);
    const rid = await t.reserveOk(500);
    const body = { idempotency_key: idem('r'), reason: 'cancelled' };
    const r1 = await t.post(`/v1/reservations/${rid}/release`, body);
    const r2 = await t.post(`/v1/reservations/${rid}/release`, body);
    expect(r1.statusCode).toBe(200);
    expect(r2.statusCode).toBe(200);
    expect(r2.body).toBe(r1.body);
    expect(await ledger(t)).toEqual(before);
    expectError(await t.post(`/v1/reservations/${rid}/release`, { ...body, reason: 'other' }), 409, 'IDEMPOTENCY_MISMATCH');
    expect(await ledger(t)).toEqual(before);
  });

  it('extend replay returns the same expires_at_ms, recomputes remaining_ttl_ms (0 once finalized), and extends once', async () => {
    const t = await createTenant(h);
    const res = json(await t.reserve(100));
    const rid = res.reservation_id as string;
    const body = { idempotency_key: idem('x'), extend_by_ms: 5000 };
    const e1 = json(await t.post(`/v1/reservations/${rid}/extend`, body));
    expect(e1.expires_at_ms).toBe(res.expires_at_ms + 5000);
    await sleep(60);
    const e2r = await t.post(`/v1/reservations/${rid}/extend`, body);
    expect(e2r.statusCode).toBe(200);
    const e2 = json(e2r);
    expect(e2.status).toBe('ACTIVE');
    expect(e2.expires_at_ms).toBe(e1.expires_at_ms);
    expect(e2.remaining_ttl_ms).toBeLessThanOrEqual(e1.remaining_ttl_ms - 50);
    expect(json(await t.get(`/v1/reservations/${rid}`)).expires_at_ms).toBe(res.expires_at_ms + 5000);
    const held = await ledger(t);
    expectError(await t.post(`/v1/reservations/${rid}/extend`, { ...body, extend_by_ms: 6000 }), 409, 'IDEMPOTENCY_MISMATCH');
    expect(await ledger(t)).toEqual(held);
    expect(json(await t.get(`/v1/reservations/${rid}`)).expires_at_ms).toBe(res.expires_at_ms + 5000);

    expect((await t.commit(rid, 100)).statusCode).toBe(200);
    const after = await ledger(t);
    const e3r = await t.post(`/v1/reservations/${rid}/extend`, body);
    expect(e3r.statusCode).toBe(200);
    expect(json(e3r)).toEqual({ status: 'ACTIVE', expires_at_ms: e1.expires_at_ms, remaining_ttl_ms: 0 });
    expect(await ledger(t)).toEqual(after);
  });
});

describe('events idempotency', () => {
  it('replay returns the same event_id; concurrent identical events charge once; tenants are independent', async () => {
    const t = await createTenant(h);
    const body = t.eventBody(250);
    const results = await Promise.all(Array.from({ length: 20 }, () => t.post('/v1/events', body)));
    for (const r of results) expect(r.statusCode, r.body).toBe(201);
    expect(new Set(results.map((r) => r.body)).size).toBe(1);
    expect((await ledger(t))[prodKey(t)]).toEqual({ remaining: 99_750, reserved: 0, spent: 250, debt: 0, allocated: 100_000, over: false });
    const before = await ledger(t);
    expectError(await t.post('/v1/events', { ...body, actual: { unit: USD, amount: 300 } }), 409, 'IDEMPOTENCY_MISMATCH');
    expect(await ledger(t)).toEqual(before);

    const other = await createTenant(h);
    const ob = other.eventBody(40, { idempotency_key: body.idempotency_key });
    const o = await other.post('/v1/events', ob);
    expect(o.statusCode).toBe(201);
    expect(json(o).event_id).not.toBe(json(results[0]!).event_id);
    expect((await ledger(other))[prodKey(other)].spent).toBe(40);
  });

  it('a commit key reused as an event key is not a mismatch (separate endpoints)', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(100);
    const k = idem('shared');
    expect((await t.commit(rid, 100, { idempotency_key: k })).statusCode).toBe(200);
    const ev = await t.post('/v1/events', t.eventBody(100, { idempotency_key: k }));
    expect(ev.statusCode, ev.body).toBe(201);
    expect((await ledger(t))[prodKey(t)].spent).toBe(200);
  });
});
