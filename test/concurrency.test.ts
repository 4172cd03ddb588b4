import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, USD, createTenant, idem, invariantHolds, json, startHarness, type Harness, type TestTenant } from './helpers.js';

/**
 * Concurrency (runtime digest §2.1 "Concurrent reserves MUST NOT oversubscribe", §2.2/§2.3
 * idempotency, §3.5 ledger invariant, §3.8 terminal states, §3.9 overage policies, §3.10).
 */

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => h.close());

const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const amt = (amount: number) => ({ unit: USD, amount });

/** Deterministic PRNG (mulberry32), so a failing mix can be replayed from its seed. */
function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Every reservation of the tenant matching `query`, following cursors. */
async function listAll(t: TestTenant, query: string): Promise<any[]> {
  const out: any[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 100; page += 1) {
    const res = await t.get(`/v1/reservations?limit=200${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    expect(res.statusCode, res.body).toBe(200);
    const body = json(res);
    out.push(...body.reservations);
    if (!body.has_more) return out;
    cursor = body.next_cursor;
  }
  throw new Error('listing did not terminate');
}

async function balances(t: TestTenant): Promise<any[]> {
  const res = await t.get(`/v1/balances?tenant=${t.id}&limit=200`);
  expect(res.statusCode, res.body).toBe(200);
  return json(res).balances;
}

describe('no oversubscription', () => {
  it('50 parallel reserves of 100 on a budget of 1000 → exactly 10 succeed, reserved 1000, remaining 0', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000], ['workspace:prod', 1000]] });
    const results = await Promise.all(Array.from({ length: 50 }, () => t.reserve(100)));
    const ok = results.filter((r) => r.statusCode === 200);
    const refused = results.filter((r) => r.statusCode !== 200);
    expect(ok).toHaveLength(10);
    expect(refused).toHaveLength(40);
    for (const r of refused) {
      expect(r.statusCode, r.body).toBe(409);
      expect(json(r).error).toBe('BUDGET_EXCEEDED');
    }
    const ids = new Set(ok.map((r) => json(r).reservation_id));
    expect(ids.size).toBe(10);

    const ws = await t.balance('workspace:prod');
    expect(ws.reserved.amount).toBe(1000);
    expect(ws.remaining.amount).toBe(0);
    expect(ws.spent.amount).toBe(0);
    expect(invariantHolds(ws)).toBe(true);
    const tenant = await t.balance();
    expect(tenant.reserved.amount).toBe(1000);
    expect(tenant.remaining.amount).toBe(999_000);

    const active = await listAll(t, '&status=ACTIVE');
    expect(active).toHaveLength(10);
    expect(new Set(active.map((r) => r.reservation_id))).toEqual(ids);
    expect(active.reduce((s, r) => s + r.reserved.amount, 0)).toBe(1000);
  });

  it('parallel events under REJECT never drive remaining below zero', async () => {
    const t = await createTenant(h, { budgets: [['', 1000]] });
    const body = () => ({
      idempotency_key: idem('ev'),
      subject: { tenant: t.id, agent: 'x' },
      action: { kind: 'k', name: 'n' },
      actual: amt(70),
      overage_policy: 'REJECT',
    });
    const results = await Promise.all(Array.from({ length: 40 }, () => t.post('/v1/events', body())));
    const applied = results.filter((r) => r.statusCode === 201).length;
    expect(applied).toBe(14); // floor(1000 / 70)
    for (const r of results.filter((x) => x.statusCode !== 201)) expect(json(r).error).toBe('BUDGET_EXCEEDED');
    const b = await t.balance();
    expect(b.spent.amount).toBe(980);
    expect(b.remaining.amount).toBe(20);
    expect(invariantHolds(b)).toBe(true);
  });
});

describe('randomized mix on a shared tenant budget and per-agent child budgets', () => {
  it('300 parallel operations keep every ledger exact', async () => {
    const seed = Number(process.env.CYCLES_MIX_SEED ?? 0x5eed1234);
    const rand = rng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));

    const agents = ['a0', 'a1', 'a2', 'a3', 'a4'] as const;
    const initial: Record<string, { allocated: number; overdraft: number }> = {
      '': { allocated: 60_000, overdraft: 0 },
      'agent:a0': { allocated: 15_000, overdraft: 4_000 },
      'agent:a1': { allocated: 15_000, overdraft: 2_000 },
      'agent:a2': { allocated: 15_000, overdraft: 0 },
      'agent:a3': { allocated: 12_000, overdraft: 0 },
      'agent:a4': { allocated: 10_000, overdraft: 1_000 },
    };
    const t = await createTenant(h, {
      budgets: Object.entries(initial).map(([rel, v]) => [rel, v.allocated, v.overdraft > 0 ? { overdraft: v.overdraft } : undefined] as [string, number, { overdraft: number }?]),
    });
    const policies = ['REJECT', 'ALLOW_IF_AVAILABLE', 'ALLOW_WITH_OVERDRAFT'] as const;
    const reserveBody = (agent: string, estimate: number, policy: string) => ({
      idempotency_key: idem('mix'),
      subject: { tenant: t.id, agent },
      action: { kind: 'llm.completion', name: 'm' },
      estimate: amt(estimate),
      overage_policy: policy,
    });

    // Phase 0: a pool of live reservations for the mix to commit, release and extend.
    const pool: Array<{ rid: string; agent: string; estimate: number }> = [];
    const seedRes = await Promise.all(
      Array.from({ length: 80 }, () => {
        const agent = pick(agents);
        const estimate = int(100, 800);
        return t.post('/v1/reservations', reserveBody(agent, estimate, pick(policies))).then((r) => ({ r, agent, estimate }));
      }),
    );
    for (const { r, agent, estimate } of seedRes) {
      if (r.statusCode === 200) pool.push({ rid: json(r).reservation_id, agent, estimate });
      else expect(json(r).error).toBe('BUDGET_EXCEEDED');
    }
    expect(pool.length).toBeGreaterThan(40);

    type Outcome = { op: string; res: LightMyRequestResponse; rid?: string; agent?: string; scope?: string; amount?: number };
    const ALLOWED: Record<string, Record<number, string[]>> = {
      reserve: { 200: [], 409: ['BUDGET_EXCEEDED', 'OVERDRAFT_LIMIT_EXCEEDED'] },
      commit: { 200: [], 409: ['RESERVATION_FINALIZED', 'BUDGET_EXCEEDED', 'OVERDRAFT_LIMIT_EXCEEDED'] },
      release: { 200: [], 409: ['RESERVATION_FINALIZED'] },
      extend: { 200: [], 409: ['RESERVATION_FINALIZED'] },
      event: { 201: [], 409: ['BUDGET_EXCEEDED', 'OVERDRAFT_LIMIT_EXCEEDED'] },
      fund: { 200: [] },
    };

    const ops: Array<() => Promise<Outcome[]>> = [];
    const sharedCommitKeys = new Map<string, { key: string; actual: number }>();
    for (let i = 0; i < 300; i += 1) {
      const roll = rand();
      if (roll < 0.22) {
        const agent = pick(agents);
        const estimate = int(100, 1500);
        const policy = pick(policies);
        const thenCommit = rand() < 0.5;
        const actual = int(0, estimate * 2);
        ops.push(async () => {
          const res = await t.post('/v1/reservations', reserveBody(agent, estimate, policy));
          const out: Outcome[] = [{ op: 'reserve', res, agent, amount: estimate }];
          if (res.statusCode === 200 && thenCommit) {
            const rid = json(res).reservation_id;
            out.push({ op: 'commit', res: await t.commit(rid, actual), rid, agent });
          }
          return out;
        });
      } else if (roll < 0.45) {
        const p = pick(pool);
        // A third of the commits reuse the key (and body) of another commit on the same reservation.
        let key = idem('c');
        let actual = int(0, p.estimate * 2);
        const shared = sharedCommitKeys.get(p.rid);
        if (shared && rand() < 0.6) ({ key, actual } = shared);
        else if (!shared) sharedCommitKeys.set(p.rid, { key, actual });
        ops.push(async () => [{ op: 'commit', res: await t.commit(p.rid, actual, { idempotency_key: key }), rid: p.rid, agent: p.agent }]);
      } else if (roll < 0.6) {
        const p = pick(pool);
        ops.push(async () => [{ op: 'release', res: await t.release(p.rid), rid: p.rid, agent: p.agent }]);
      } else if (roll < 0.72) {
        const p = pick(pool);
        const by = int(1, 30_000);
        ops.push(async () => [{ op: 'extend', res: await t.post(`/v1/reservations/${p.rid}/extend`, { idempotency_key: idem('e'), extend_by_ms: by }), rid: p.rid, agent: p.agent }]);
      } else if (roll < 0.92) {
        const agent = pick(agents);
        const actual = int(50, 2500);
        const policy = pick(policies);
        ops.push(async () => [{
          op: 'event',
          res: await t.post('/v1/events', {
            idempotency_key: idem('ev'),
            subject: { tenant: t.id, agent },
            action: { kind: 'tool.call', name: 'x' },
            actual: amt(actual),
            overage_policy: policy,
          }),
          agent,
          amount: actual,
        }]);
      } else {
        const rel = pick(Object.keys(initial));
        const amount = int(100, 1000);
        ops.push(async () => [{
          op: 'fund',
          res: await h.admin.inject({
            method: 'POST',
            url: `/v1/admin/budgets/fund?scope=${encodeURIComponent(t.scope(rel))}&unit=${USD}&tenant_id=${t.id}`,
            headers: ADMIN,
            payload: { operation: 'CREDIT', amount: amt(amount) },
          }),
          scope: t.scope(rel),
          amount,
        }]);
      }
    }

    const outcomes = (await Promise.all(ops.map((f) => f()))).flat();

    // Every answer is one the protocol allows for that operation; never a 5xx.
    for (const o of outcomes) {
      const allowed = ALLOWED[o.op]!;
      expect(Object.keys(allowed).map(Number), `${o.op} (seed ${seed}): ${o.res.statusCode} ${o.res.body}`).toContain(o.res.statusCode);
      const codes = allowed[o.res.statusCode]!;
      if (codes.length > 0) expect(codes, `${o.op} (seed ${seed}): ${o.res.body}`).toContain(json(o.res).error);
    }

    // The mix must really contend: wins and refusals of every kind of operation.
    const count = (op: string, status: number) => outcomes.filter((o) => o.op === op && o.res.statusCode === status).length;
    for (const [op, status] of [['reserve', 200], ['reserve', 409], ['commit', 200], ['commit', 409], ['release', 200], ['release', 409], ['extend', 200], ['event', 201], ['fund', 200]] as const) {
      expect(count(op, status), `${op} ${status} (seed ${seed})`).toBeGreaterThan(0);
    }

    // Per reservation: at most one finalization won; commits with a shared key agree on the charge.
    const finals = new Map<string, { commit?: number; release?: boolean }>();
    for (const o of outcomes) {
      if (!o.rid || o.res.statusCode !== 200 || (o.op !== 'commit' && o.op !== 'release')) continue;
      const f = finals.get(o.rid) ?? {};
      if (o.op === 'commit') {
        const charged = json(o.res).charged.amount;
        if (f.commit !== undefined) expect(charged, `replayed commit of ${o.rid} (seed ${seed})`).toBe(f.commit);
        f.commit = charged;
      } else {
        f.release = true;
      }
      expect(f.commit !== undefined && f.release === true, `${o.rid} both committed and released (seed ${seed})`).toBe(false);
      finals.set(o.rid, f);
    }

    const all = await listAll(t, '');
    const byId = new Map(all.map((r) => [r.reservation_id, r]));
    for (const [rid, f] of finals) {
      const row = byId.get(rid);
      expect(row, rid).toBeDefined();
      if (f.commit !== undefined) {
        expect(row.status).toBe('COMMITTED');
        expect(row.committed.amount).toBe(f.commit);
      } else {
        expect(row.status).toBe('RELEASED');
      }
    }

    // Event charges per agent (charged is present only when capped).
    const eventCharged: Record<string, number> = {};
    const credits: Record<string, number> = {};
    for (const o of outcomes) {
      if (o.op === 'event' && o.res.statusCode === 201) {
        const body = json(o.res);
        eventCharged[o.agent!] = (eventCharged[o.agent!] ?? 0) + (body.charged ? body.charged.amount : o.amount!);
        if (body.charged) expect(body.charged.amount).toBeLessThan(o.amount!);
      }
      if (o.op === 'fund') credits[o.scope!] = (credits[o.scope!] ?? 0) + o.amount!;
    }

    const bals = await balances(t);
    expect(bals).toHaveLength(Object.keys(initial).length);
    for (const b of bals) {
      const rel = b.scope_path === t.scope() ? '' : b.scope_path.slice(t.scope().length + 1);
      const init = initial[rel]!;
      const agent = rel.startsWith('agent:') ? rel.slice('agent:'.length) : undefined;
      const label = `${b.scope_path} (seed ${seed})`;
      expect(invariantHolds(b), label).toBe(true);
      expect(b.overdraft_limit.amount, label).toBe(init.overdraft);
      expect(b.allocated.amount, label).toBe(init.allocated + (credits[b.scope_path] ?? 0));
      if (init.overdraft === 0) {
        expect(b.remaining.amount, label).toBeGreaterThanOrEqual(0);
        expect(b.debt.amount, label).toBe(0);
      } else {
        expect(b.remaining.amount, label).toBeGreaterThanOrEqual(-init.overdraft);
        if (b.debt.amount > init.overdraft) expect(b.is_over_limit, label).toBe(true);
      }
      // reserved == sum of ACTIVE estimates listed for this scope.
      const active = await listAll(t, `&status=ACTIVE${agent ? `&agent=${agent}` : ''}`);
      expect(b.reserved.amount, label).toBe(active.reduce((s, r) => s + r.reserved.amount, 0));
      for (const r of active) expect(r.affected_scopes, label).toContain(b.scope_path);
      // spent + debt == everything charged on this scope (commits and direct events), exactly once.
      const committed = await listAll(t, `&status=COMMITTED${agent ? `&agent=${agent}` : ''}`);
      const charged = committed.reduce((s, r) => s + r.committed.amount, 0)
        + (agent ? (eventCharged[agent] ?? 0) : Object.values(eventCharged).reduce((s, v) => s + v, 0));
      expect(b.spent.amount + b.debt.amount, label).toBe(charged);
    }
  });
});

describe('exactly-once settlement under races', () => {
  it('25 parallel commits with the same key and body settle once and all answer the same', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(1000);
    const before = await t.balance('workspace:prod');
    const body = { idempotency_key: idem('same'), actual: amt(700) };
    const results = await Promise.all(Array.from({ length: 25 }, () => t.post(`/v1/reservations/${rid}/commit`, body)));
    for (const r of results) {
      expect(r.statusCode, r.body).toBe(200);
      expect(json(r)).toEqual({ status: 'COMMITTED', charged: amt(700), released: amt(300) });
    }
    const after = await t.balance('workspace:prod');
    expect(after.spent.amount).toBe(before.spent.amount + 700);
    expect(after.reserved.amount).toBe(before.reserved.amount - 1000);
    expect(after.remaining.amount).toBe(before.remaining.amount + 300);
    expect(invariantHolds(after)).toBe(true);
  });

  it('parallel commits with different keys: exactly one 200, the rest 409 RESERVATION_FINALIZED', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(1000);
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => t.commit(rid, 100 + i)));
    const ok = results.filter((r) => r.statusCode === 200);
    expect(ok).toHaveLength(1);
    for (const r of results.filter((x) => x.statusCode !== 200)) {
      expect(r.statusCode, r.body).toBe(409);
      expect(json(r).error).toBe('RESERVATION_FINALIZED');
    }
    const charged = json(ok[0]!).charged.amount;
    const ws = await t.balance('workspace:prod');
    expect(ws.spent.amount).toBe(charged);
    expect(ws.reserved.amount).toBe(0);
    expect(json(await t.get(`/v1/reservations/${rid}`)).committed).toEqual(amt(charged));
  });

  it('25 parallel releases with the same key release once', async () => {
    const t = await createTenant(h);
    const keep = await t.reserveOk(111);
    const rid = await t.reserveOk(1000);
    const body = { idempotency_key: idem('rel'), reason: 'done' };
    const results = await Promise.all(Array.from({ length: 25 }, () => t.post(`/v1/reservations/${rid}/release`, body)));
    for (const r of results) {
      expect(r.statusCode, r.body).toBe(200);
      expect(json(r)).toEqual({ status: 'RELEASED', released: amt(1000) });
    }
    const ws = await t.balance('workspace:prod');
    expect(ws.reserved.amount).toBe(111);
    expect(ws.remaining.amount).toBe(100_000 - 111);
    expect((await listAll(t, '&status=ACTIVE')).map((r) => r.reservation_id)).toEqual([keep]);
  });

  it('parallel extends with the same key extend once', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(10);
    const before = json(await t.get(`/v1/reservations/${rid}`)).expires_at_ms;
    const body = { idempotency_key: idem('ext'), extend_by_ms: 5000 };
    const results = await Promise.all(Array.from({ length: 15 }, () => t.post(`/v1/reservations/${rid}/extend`, body)));
    for (const r of results) {
      expect(r.statusCode, r.body).toBe(200);
      expect(json(r).expires_at_ms).toBe(before + 5000);
    }
    expect(json(await t.get(`/v1/reservations/${rid}`)).expires_at_ms).toBe(before + 5000);
  });

  it('a commit and a release racing on one reservation: exactly one wins, 30 times over', async () => {
    const t = await createTenant(h);
    const rids = await Promise.all(Array.from({ length: 30 }, () => t.reserveOk(500)));
    const races = await Promise.all(
      rids.map(async (rid, i) => {
        const [c, r] = i % 2 === 0 ? await Promise.all([t.commit(rid, 300), t.release(rid)]) : await Promise.all([t.release(rid), t.commit(rid, 300)]).then(([a, b]) => [b, a]);
        return { rid, c: c!, r: r! };
      }),
    );
    let commits = 0;
    for (const { rid, c, r } of races) {
      const wins = [c.statusCode, r.statusCode].filter((s) => s === 200).length;
      expect(wins, `${rid}: commit ${c.statusCode} ${c.body} / release ${r.statusCode} ${r.body}`).toBe(1);
      const loser = c.statusCode === 200 ? r : c;
      expect(loser.statusCode).toBe(409);
      expect(json(loser).error).toBe('RESERVATION_FINALIZED');
      const status = json(await t.get(`/v1/reservations/${rid}`)).status;
      expect(status).toBe(c.statusCode === 200 ? 'COMMITTED' : 'RELEASED');
      if (c.statusCode === 200) commits += 1;
    }
    for (const rel of ['', 'workspace:prod']) {
      const b = await t.balance(rel);
      expect(b.reserved.amount).toBe(0);
      expect(b.spent.amount).toBe(commits * 300);
      expect(invariantHolds(b)).toBe(true);
    }
  });
});
