import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, USD, createTenant, idem, invariantHolds, json, startHarness, expectError, sleep, getRes, ledger, type Harness, type TestTenant } from './helpers.js';

/**
 * Expiry sweep (runtime digest §3.8, checklist §9 K 112–114), GET/list reservations (§2.5, §2.6,
 * §6.1) and GET /v1/balances (§2.8, §6.2). The harness has a private key prefix, so sweepOnce()
 * here only walks this file's tenants and its count is exact.
 */

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ keyPrefix: `cyt-expl-${randomBytes(4).toString('hex')}` });
});
afterAll(async () => h?.close());

const iso = (ms: number) => new Date(ms).toISOString();

async function list(t: TestTenant, query = ''): Promise<any> {
  const r = await t.get(`/v1/reservations${query ? `?${query}` : ''}`);
  expect(r.statusCode, r.body).toBe(200);
  return json(r);
}

async function ids(t: TestTenant, query = ''): Promise<string[]> {
  return ((await list(t, query)).reservations as any[]).map((r) => r.reservation_id).sort();
}

/** Follows next_cursor until has_more is false; returns the pages. */
async function pages(t: TestTenant, query: string): Promise<any[][]> {
  const out: any[][] = [];
  let cursor: string | undefined;
  for (let i = 0; i < 20; i += 1) {
    const page = await list(t, `${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    out.push(page.reservations);
    if (page.has_more) {
      expect(typeof page.next_cursor).toBe('string');
      cursor = page.next_cursor;
    } else {
      expect(page).not.toHaveProperty('next_cursor');
      return out;
    }
  }
  throw new Error('pagination did not terminate');
}

const prodKey = (t: TestTenant) => `${t.scope('workspace:prod')}|${USD}`;

describe('expiry sweep', () => {
  it('expires only due reservations, restores their holds, and leaves them visible as EXPIRED', async () => {
    const t = await createTenant(h);
    const l0 = await ledger(t);
    const live = json(await t.reserve(100, { ttl_ms: 60_000 })).reservation_id as string;
    const inGrace = json(await t.reserve(200, { ttl_ms: 1000, grace_period_ms: 60_000 })).reservation_id as string;
    const dueBody = t.reserveBody(300, { ttl_ms: 1000, grace_period_ms: 0 });
    const dueRes = await t.post('/v1/reservations', dueBody);
    const due = json(dueRes).reservation_id as string;
    // Nothing is due yet: a sweep changes nothing.
    expect(await h.system.sweep.sweepOnce()).toBe(0);
    const held = await ledger(t);
    expect(held[prodKey(t)]).toEqual({ remaining: 99_400, reserved: 600, spent: 0, debt: 0, allocated: 100_000, over: false });

    await sleep(1100);
    expect(await h.system.sweep.sweepOnce()).toBe(1);
    const after = await ledger(t);
    expect(after[prodKey(t)]).toEqual({ remaining: 99_700, reserved: 300, spent: 0, debt: 0, allocated: 100_000, over: false });
    expect(after[`${t.scope()}|${USD}`]).toEqual({ ...l0[`${t.scope()}|${USD}`], reserved: 300, remaining: 999_700 });

    expectError(await t.get(`/v1/reservations/${due}`), 410, 'RESERVATION_EXPIRED');
    expect((await getRes(t, live)).status).toBe('ACTIVE');
    expect((await getRes(t, inGrace)).status).toBe('ACTIVE');

    const expired = await list(t, 'status=EXPIRED');
    expect(expired.reservations.length).toBe(1);
    const row = expired.reservations[0];
    expect(row.reservation_id).toBe(due);
    expect(row.status).toBe('EXPIRED');
    expect(row.reserved).toEqual({ unit: USD, amount: 300 });
    expect(row).not.toHaveProperty('finalized_at_ms');
    expect(row).not.toHaveProperty('committed');
    expect(await ids(t, 'status=ACTIVE')).toEqual([live, inGrace].sort());

    // Commit, release and extend of the expired reservation are 410 and move nothing.
    expectError(await t.commit(due, 300), 410, 'RESERVATION_EXPIRED');
    expectError(await t.release(due), 410, 'RESERVATION_EXPIRED');
    expectError(await t.post(`/v1/reservations/${due}/extend`, { idempotency_key: idem('x'), extend_by_ms: 60_000 }), 410, 'RESERVATION_EXPIRED');
    expect(await ledger(t)).toEqual(after);

    // A replay of the create returns the original body with remaining_ttl_ms 0; recovery lookup still finds it.
    const replay = await t.post('/v1/reservations', dueBody);
    expect(replay.statusCode).toBe(200);
    expect(json(replay)).toEqual({ ...json(dueRes), remaining_ttl_ms: 0 });
    expect(await ledger(t)).toEqual(after);
    const byKey = (await list(t, `idempotency_key=${dueBody.idempotency_key}`)).reservations;
    expect(byKey.map((r: any) => [r.reservation_id, r.status])).toEqual([[due, 'EXPIRED']]);

    // A second sweep is a no-op; the reservation inside its grace window can still commit.
    expect(await h.system.sweep.sweepOnce()).toBe(0);
    expect(await ledger(t)).toEqual(after);
    expect((await t.commit(inGrace, 150)).statusCode).toBe(200);
    expect((await t.balance('workspace:prod')).reserved.amount).toBe(100);
  });
});

describe('GET /v1/reservations/{id}', () => {
  it('never-existing id of 101..128 chars → 404 NOT_FOUND; 129 chars → 400 INVALID_REQUEST (protocol envelope)', async () => {
    const t = await createTenant(h);
    expectError(await t.get('/v1/reservations/never-existed'), 404, 'NOT_FOUND');
    expectError(await t.get(`/v1/reservations/${'a'.repeat(110)}`), 404, 'NOT_FOUND');
    expectError(await t.get(`/v1/reservations/${'a'.repeat(128)}`), 404, 'NOT_FOUND');
    expectError(await t.get(`/v1/reservations/${'a'.repeat(129)}`), 400, 'INVALID_REQUEST');
  });
});

describe('GET /v1/reservations: filters', () => {
  it('status filter, committed/finalized projection, finalized window excludes ACTIVE rows, invalid status → 400', async () => {
    const t = await createTenant(h);
    const act = await t.reserveOk(100);
    const com = await t.reserveOk(200);
    const rel = await t.reserveOk(300);
    expect((await t.commit(com, 60)).statusCode).toBe(200);
    expect((await t.release(rel)).statusCode).toBe(200);

    const a = (await list(t, 'status=ACTIVE')).reservations;
    expect(a.map((r: any) => r.reservation_id)).toEqual([act]);
    expect(a[0]).not.toHaveProperty('finalized_at_ms');
    expect(a[0]).not.toHaveProperty('committed');
    const c = (await list(t, 'status=COMMITTED')).reservations;
    expect(c.map((r: any) => r.reservation_id)).toEqual([com]);
    expect(c[0].committed).toEqual({ unit: USD, amount: 60 });
    expect(Number.isInteger(c[0].finalized_at_ms)).toBe(true);
    const r = (await list(t, 'status=RELEASED')).reservations;
    expect(r.map((x: any) => x.reservation_id)).toEqual([rel]);
    expect(Number.isInteger(r[0].finalized_at_ms)).toBe(true);
    expect(r[0]).not.toHaveProperty('committed');
    expect(await ids(t, 'status=EXPIRED')).toEqual([]);

    expect(await ids(t, 'finalized_from=1970-01-01T00:00:00Z')).toEqual([com, rel].sort());
    expect(await ids(t, 'finalized_to=1970-01-01T00:00:00Z')).toEqual([]);
    expect(await ids(t, `finalized_from=${iso(c[0].finalized_at_ms)}&finalized_to=${iso(c[0].finalized_at_ms)}`)).toContain(com);
    expectError(await t.get('/v1/reservations?status=BOGUS'), 400, 'INVALID_REQUEST');
    expectError(await t.get('/v1/reservations?finalized_from=garbage'), 400, 'INVALID_REQUEST');
  });

  it('workspace filter; blank filter values are ignored', async () => {
    const t = await createTenant(h);
    const p1 = await t.reserveOk(10);
    const p2 = await t.reserveOk(20);
    const d1 = await t.reserveOk(30, { ws: 'dev' });
    const all = [p1, p2, d1].sort();
    expect(await ids(t, 'workspace=prod')).toEqual([p1, p2].sort());
    expect(await ids(t, 'workspace=dev')).toEqual([d1]);
    expect(await ids(t, 'workspace=nope')).toEqual([]);
    expect(await ids(t)).toEqual(all);
    expect(await ids(t, 'workspace=')).toEqual(all);
    expect(await ids(t, 'from=&to=')).toEqual(all);
    expect(await ids(t, 'expires_from=&finalized_to=')).toEqual(all);
    expect(await ids(t, `tenant=${t.id}&workspace=prod`)).toEqual([p1, p2].sort());
    expectError(await t.get('/v1/reservations?tenant=someone-else'), 403, 'FORBIDDEN');
  });

  it('idempotency_key recovery lookup returns exactly the reservation created with it', async () => {
    const t = await createTenant(h);
    const body = t.reserveBody(10);
    const rid = json(await t.post('/v1/reservations', body)).reservation_id;
    await t.reserveOk(20);
    const found = (await list(t, `idempotency_key=${body.idempotency_key}`)).reservations;
    expect(found.length).toBe(1);
    expect(found[0].reservation_id).toBe(rid);
    expect(found[0].idempotency_key).toBe(body.idempotency_key);
    expect(await ids(t, 'idempotency_key=never-used')).toEqual([]);
    expect(await ids(t, `idempotency_key=${body.idempotency_key}&status=COMMITTED`)).toEqual([]);
  });

  it('created (from/to) and expires windows are inclusive; invalid windows → 400', async () => {
    const t = await createTenant(h);
    const made: Array<{ rid: string; created: number; expires: number }> = [];
    for (const ttl of [60_000, 120_000, 180_000]) {
      const rid = await t.reserveOk(10, { ttl_ms: ttl });
      const d = await getRes(t, rid);
      made.push({ rid, created: d.created_at_ms, expires: d.expires_at_ms });
      await sleep(5);
    }
    const [r1, r2, r3] = made as [typeof made[0], typeof made[0], typeof made[0]];
    expect(await ids(t, `from=${iso(r2.created)}`)).toEqual([r2.rid, r3.rid].sort());
    expect(await ids(t, `to=${iso(r2.created)}`)).toEqual([r1.rid, r2.rid].sort());
    expect(await ids(t, `from=${iso(r2.created)}&to=${iso(r2.created)}`)).toEqual([r2.rid]);
    expect(await ids(t, `expires_from=${iso(r2.expires)}`)).toEqual([r2.rid, r3.rid].sort());
    expect(await ids(t, `expires_to=${iso(r2.expires)}`)).toEqual([r1.rid, r2.rid].sort());
    expect(await ids(t, `from=${iso(r1.created)}&expires_to=${iso(r1.expires)}`)).toEqual([r1.rid]);
    expectError(await t.get('/v1/reservations?from=2026-05-02T00:00:00Z&to=2026-05-01T00:00:00Z'), 400, 'INVALID_REQUEST');
    expectError(await t.get('/v1/reservations?from=not-a-date'), 400, 'INVALID_REQUEST');
    expectError(await t.get('/v1/reservations?expires_from=2026-05-02T00:00:00Z&expires_to=2026-05-01T00:00:00Z'), 400, 'INVALID_REQUEST');
  });
});

describe('GET /v1/reservations: ordering, pagination, projection', () => {
  // Estimates and TTLs chosen so that reserved order == expires order != creation order.
  const SPECS: Array<[number, number]> = [[50, 50_000], [10, 10_000], [70, 70_000], [30, 30_000], [60, 60_000], [20, 20_000], [40, 40_000]];

  async function seven(t: TestTenant): Promise<string[]> {
    const out: string[] = [];
    for (const [amount, ttl] of SPECS) out.push(await t.reserveOk(amount, { ttl_ms: ttl }));
    return out;
  }

  it('unsorted cursor pagination: limit 3 gives pages of 3, 3, 1 that are disjoint and complete', async () => {
    const t = await createTenant(h);
    const all = await seven(t);
    const ps = await pages(t, 'limit=3');
    expect(ps.map((p) => p.length)).toEqual([3, 3, 1]);
    const seen = ps.flat().map((r) => r.reservation_id);
    expect(new Set(seen).size).toBe(7);
    expect(seen.slice().sort()).toEqual(all.slice().sort());
    const whole = await list(t, 'limit=7');
    expect(whole.reservations.length).toBe(7);
    expect(whole.has_more).toBe(false);
    expect(whole).not.toHaveProperty('next_cursor');

    // With a filter, pages stay disjoint and together give exactly the matching rows.
    for (const rid of all.slice(0, 2)) expect((await t.commit(rid, 1)).statusCode).toBe(200);
    const active = (await pages(t, 'status=ACTIVE&limit=2')).flat().map((r) => r.reservation_id);
    expect(active.length).toBe(5);
    expect(active.slice().sort()).toEqual(all.slice(2).sort());
    const committed = (await pages(t, 'status=COMMITTED&limit=1')).flat().map((r) => r.reservation_id);
    expect(committed.slice().sort()).toEqual(all.slice(0, 2).sort());
  });

  it('sort_by reservation_id / scope_path / status orders lexicographically', async () => {
    const t = await createTenant(h);
    const a = await t.reserveOk(1, { ws: 'zeta' });
    const b = await t.reserveOk(1, { ws: 'alpha' });
    const c = await t.reserveOk(1);
    expect((await t.commit(b, 1)).statusCode).toBe(200);
    expect((await t.release(c)).statusCode).toBe(200);
    const byId = (await pages(t, 'sort_by=reservation_id&sort_dir=asc&limit=2')).flat().map((r) => r.reservation_id);
    expect(byId).toEqual([a, b, c].sort());
    const byScope = (await pages(t, 'sort_by=scope_path&sort_dir=asc&limit=2')).flat().map((r) => r.scope_path);
    expect(byScope).toEqual([t.scope('workspace:alpha'), t.scope('workspace:prod'), t.scope('workspace:zeta')]);
    const byStatus = (await pages(t, 'sort_by=status&sort_dir=desc&limit=2')).flat().map((r) => r.status);
    expect(byStatus).toEqual(['RELEASED', 'COMMITTED', 'ACTIVE']);
  });

  it('sort_by=reserved asc/desc orders across pages exactly', async () => {
    const t = await createTenant(h);
    await seven(t);
    const asc = await pages(t, 'sort_by=reserved&sort_dir=asc&limit=3');
    expect(asc.map((p) => p.length)).toEqual([3, 3, 1]);
    expect(asc.flat().map((r) => r.reserved.amount)).toEqual([10, 20, 30, 40, 50, 60, 70]);
    const desc = await pages(t, 'sort_by=reserved&sort_dir=desc&limit=3');
    expect(desc.flat().map((r) => r.reserved.amount)).toEqual([70, 60, 50, 40, 30, 20, 10]);
  });

  it('sort_by=expires_at_ms asc never decreases; sort_by=created_at_ms defaults to desc', async () => {
    const t = await createTenant(h);
    await seven(t);
    const byExp = (await pages(t, 'sort_by=expires_at_ms&sort_dir=asc&limit=2')).flat();
    expect(byExp.length).toBe(7);
    for (let i = 1; i < byExp.length; i += 1) expect(byExp[i].expires_at_ms).toBeGreaterThanOrEqual(byExp[i - 1].expires_at_ms);
    expect(byExp.map((r) => r.reserved.amount)).toEqual([10, 20, 30, 40, 50, 60, 70]);
    const byCreated = (await pages(t, 'sort_by=created_at_ms&limit=3')).flat();
    expect(byCreated.length).toBe(7);
    for (let i = 1; i < byCreated.length; i += 1) expect(byCreated[i].created_at_ms).toBeLessThanOrEqual(byCreated[i - 1].created_at_ms);
    expect(new Set(byCreated.map((r) => r.reservation_id)).size).toBe(7);
    expectError(await t.get('/v1/reservations?sort_by=bogus'), 400, 'INVALID_REQUEST');
    expectError(await t.get('/v1/reservations?sort_by=reserved&sort_dir=up'), 400, 'INVALID_REQUEST');
  });

  it('a sorted cursor reused with different filters → 400; changing include is fine; a garbage cursor → 400', async () => {
    const t = await createTenant(h);
    await seven(t);
    const base = `sort_by=reserved&sort_dir=asc&limit=3&from=${iso(0)}`;
    const first = await list(t, base);
    expect(first.has_more).toBe(true);
    const c = encodeURIComponent(first.next_cursor);
    expectError(await t.get(`/v1/reservations?${base}&status=ACTIVE&cursor=${c}`), 400, 'INVALID_REQUEST');
    expectError(await t.get(`/v1/reservations?sort_by=reserved&sort_dir=asc&limit=3&from=${iso(1000)}&cursor=${c}`), 400, 'INVALID_REQUEST');
    expectError(await t.get(`/v1/reservations?sort_by=reserved&sort_dir=desc&limit=3&from=${iso(0)}&cursor=${c}`), 400, 'INVALID_REQUEST');
    expectError(await t.get(`/v1/reservations?sort_by=expires_at_ms&sort_dir=asc&limit=3&from=${iso(0)}&cursor=${c}`), 400, 'INVALID_REQUEST');
    expectError(await t.get(`/v1/reservations?${base}&workspace=prod&cursor=${c}`), 400, 'INVALID_REQUEST');
    const withInclude = await list(t, `${base}&include=metadata&cursor=${c}`);
    expect(withInclude.reservations.map((r: any) => r.reserved.amount)).toEqual([40, 50, 60]);
    expectError(await t.get('/v1/reservations?cursor=%%%not-a-cursor'), 400, 'INVALID_REQUEST');
  });

  it('include projects metadata / committed_metadata only when asked; committed is always present', async () => {
    const t = await createTenant(h);
    const m = await t.reserveOk(100, { metadata: { k: 'v' } });
    expect((await t.commit(m, 40, { metadata: { a: 'b' } })).statusCode).toBe(200);
    const plain = await t.reserveOk(50);
    const byId = (rows: any[]) => Object.fromEntries(rows.map((r) => [r.reservation_id, r]));

    const none = byId((await list(t)).reservations);
    for (const r of Object.values(none) as any[]) {
      expect(r).not.toHaveProperty('metadata');
      expect(r).not.toHaveProperty('committed_metadata');
    }
    expect(none[m].committed).toEqual({ unit: USD, amount: 40 });
    const meta = byId((await list(t, 'include=metadata')).reservations);
    expect(meta[m].metadata).toEqual({ k: 'v' });
    expect(meta[m]).not.toHaveProperty('committed_metadata');
    expect(meta[plain]).not.toHaveProperty('metadata');
    const cm = byId((await list(t, 'include=committed_metadata')).reservations);
    expect(cm[m].committed_metadata).toEqual({ a: 'b' });
    expect(cm[m]).not.toHaveProperty('metadata');
    const both = byId((await list(t, 'include=metadata,%20committed_metadata')).reservations);
    expect(both[m].metadata).toEqual({ k: 'v' });
    expect(both[m].committed_metadata).toEqual({ a: 'b' });
    const junk = byId((await list(t, 'include=foo,,')).reservations);
    expect(junk[m]).not.toHaveProperty('metadata');
    expect(Object.keys(junk).sort()).toEqual([m, plain].sort());
    // The detail always carries both.
    const d = await getRes(t, m);
    expect(d.metadata).toEqual({ k: 'v' });
    expect(d.committed_metadata).toEqual({ a: 'b' });
  });

  it('limit bounds (1..200, default 50) and admin listing needs tenant', async () => {
    const t = await createTenant(h);
    await Promise.all(Array.from({ length: 51 }, () => t.reserve(1)));
    const first = await list(t);
    expect(first.reservations.length).toBe(50);
    expect(first.has_more).toBe(true);
    const second = await list(t, `cursor=${encodeURIComponent(first.next_cursor)}`);
    expect(second.reservations.length).toBe(1);
    expect(second.has_more).toBe(false);
    expect((await list(t, 'limit=200')).reservations.length).toBe(51);
    expectError(await t.get('/v1/reservations?limit=0'), 400, 'INVALID_REQUEST');
    expectError(await t.get('/v1/reservations?limit=201'), 400, 'INVALID_REQUEST');

    const admin = { 'x-admin-api-key': ADMIN_KEY };
    expectError(await h.runtime.inject({ method: 'GET', url: '/v1/reservations', headers: admin }), 400, 'INVALID_REQUEST');
    const adm = await h.runtime.inject({ method: 'GET', url: `/v1/reservations?tenant=${t.id}&limit=200`, headers: admin });
    expect(adm.statusCode).toBe(200);
    expect(json(adm).reservations.length).toBe(51);
  });
});

describe('GET /v1/balances', () => {
  async function tenantWithFive() {
    return createTenant(h, {
      budgets: [
        ['', 1_000_000],
        ['', 5_000, { unit: 'TOKENS' }],
        ['workspace:prod', 100_000],
        ['workspace:prod/app:a', 10_000],
        ['workspace:dev', 7_000],
      ] });
  }

  it('requires a subject filter; tenant filter returns every ledger of the tenant with the invariant holding', async () => {
    const t = await tenantWithFive();
    expectError(await t.get('/v1/balances'), 400, 'INVALID_REQUEST');
    const res = await t.get(`/v1/balances?tenant=${t.id}`);
    expect(res.statusCode).toBe(200);
    const rows = json(res).balances as any[];
    expect(rows.map((b) => `${b.scope_path}|${b.remaining.unit}`).sort()).toEqual(
      [
        `${t.scope()}|${USD}`,
        `${t.scope()}|TOKENS`,
        `${t.scope('workspace:prod')}|${USD}`,
        `${t.scope('workspace:prod/app:a')}|${USD}`,
        `${t.scope('workspace:dev')}|${USD}`,
      ].sort(),
    );
    for (const b of rows) {
      expect(invariantHolds(b)).toBe(true);
      const unit = b.remaining.unit;
      for (const f of ['reserved', 'spent', 'allocated', 'debt', 'overdraft_limit']) expect(b[f].unit).toBe(unit);
      expect(b.scope).toBe(b.scope_path.split('/').pop());
    }
    expect(json(res).has_more).toBe(false);
    expectError(await t.get('/v1/balances?tenant=someone-else'), 403, 'FORBIDDEN');
  });

  it('subject filters narrow to the effective tenant\'s matching scopes', async () => {
    const t = await tenantWithFive();
    const other = await createTenant(h);
    const paths = async (query: string) => ((json(await t.get(`/v1/balances?${query}`)).balances as any[]).map((b) => b.scope_path)).sort();
    expect(await paths('workspace=prod')).toEqual([t.scope('workspace:prod'), t.scope('workspace:prod/app:a')].sort());
    expect(await paths('app=a')).toEqual([t.scope('workspace:prod/app:a')]);
    expect(await paths(`tenant=${t.id}&workspace=dev`)).toEqual([t.scope('workspace:dev')]);
    expect(await paths('workspace=nope')).toEqual([]);
    // The other tenant also has workspace:prod; it never appears.
    for (const p of await paths('workspace=prod')) expect(p.startsWith(`${t.scope()}/`)).toBe(true);
    expect((await other.balance('workspace:prod')).scope_path).toBe(other.scope('workspace:prod'));
  });

  it('paginates with a cursor (limit 2 → 2, 2, 1) and enforces limit bounds', async () => {
    const t = await tenantWithFive();
    const seen: string[] = [];
    const sizes: number[] = [];
    let cursor: string | undefined;
    for (let i = 0; i < 10; i += 1) {
      const res = await t.get(`/v1/balances?tenant=${t.id}&limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      expect(res.statusCode, res.body).toBe(200);
      const b = json(res);
      sizes.push(b.balances.length);
      seen.push(...b.balances.map((x: any) => `${x.scope_path}|${x.remaining.unit}`));
      if (!b.has_more) {
        expect(b).not.toHaveProperty('next_cursor');
        break;
      }
      cursor = b.next_cursor;
    }
    expect(sizes).toEqual([2, 2, 1]);
    expect(new Set(seen).size).toBe(5);
    expectError(await t.get(`/v1/balances?tenant=${t.id}&limit=0`), 400, 'INVALID_REQUEST');
    expectError(await t.get(`/v1/balances?tenant=${t.id}&limit=201`), 400, 'INVALID_REQUEST');
    const max = await t.get(`/v1/balances?tenant=${t.id}&limit=200`);
    expect(max.statusCode).toBe(200);
    expect(json(max).balances.length).toBe(5);
  });
});
