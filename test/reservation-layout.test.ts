import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { payloadHash } from '../src/domain/canonical.js';
import { shortOfReservationId } from '../src/domain/ids.js';
import { decodeMsgpack, idempotencyField } from '../src/store/reservation-codec.js';
import { migrateReservationLayout } from '../src/workers/layout-migration.js';
import { TestTenant, USD, createTenant, expectError, idem, json, sleep, startHarness, type Harness } from './helpers.js';

// ADR 0019: reservation records in one hash per tenant, a creation log, the expiry index, the
// live idempotency index; retention purge by the sweep; migration from one hash per reservation.

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h.close();
});

const short = (rid: string) => shortOfReservationId(rid)!;

/** Every key of one tenant (its hash-tag prefix). */
async function tenantKeys(redis: Redis | Harness['system']['redis'], prefix: string, tenantId: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await (redis as Redis).scan(cursor, 'MATCH', `${prefix}:{${tenantId}}:*`, 'COUNT', 1000);
    cursor = next;
    out.push(...keys);
  } while (cursor !== '0');
  return out.sort();
}

describe('reservation records (ADR 0019)', () => {
  it('a reservation is a field of the tenant hash plus log, expiry and idempotency entries; no key per reservation', async () => {
    const t = await createTenant(h);
    const { redis, keys } = h.system;
    await t.reserveOk(1);
    const before = await tenantKeys(redis, 'cytest', t.id);
    const bodies = Array.from({ length: 40 }, (_, i) => t.reserveBody(10 + i));
    const rids = await Promise.all(bodies.map(async (b) => json(await t.post('/v1/reservations', b)).reservation_id as string));
    // 40 more reservations, and not one more key.
    expect(await tenantKeys(redis, 'cytest', t.id)).toEqual(before);
    expect(await redis.hlen(keys.reservations(t.id))).toBe(41);
    expect(await redis.xlen(keys.reservationLog(t.id))).toBe(41);
    expect(await redis.zcard(keys.expiryIndex(t.id))).toBe(41);
    expect(await redis.hlen(keys.reserveIdempotencyIndex(t.id))).toBe(41);
    for (const [i, rid] of rids.entries()) {
      expect(rid).toMatch(new RegExp(`^rsv_${t.id}_[0-9A-Za-z]{12}$`));
      expect(await redis.hget(keys.reserveIdempotencyIndex(t.id), idempotencyField(bodies[i]!.idempotency_key))).toBe(short(rid));
    }
    // The record: a MessagePack map that holds the request, not the tenant or a derivable subject.
    const raw = decodeMsgpack((await redis.hgetBuffer(keys.reservations(t.id), short(rids[0]!)))!) as Record<string, unknown>;
    expect(raw).toMatchObject({ s: 'ACTIVE', u: USD, e: 10, p: 'workspace:prod', m: '11', k: bodies[0]!.idempotency_key, n: 0, g: 5000, o: 'A' });
    expect(raw.j).toBeUndefined();
    expect(JSON.parse(String(raw.a))).toEqual(bodies[0]!.action);
    expect(String(raw.h)).toBe(payloadHash({ ...bodies[0], dry_run: false }).slice(0, 22));
  });

  it('the idempotency index finds the reservation of any key (reserve and listing use one digest)', async () => {
    const t = await createTenant(h);
    for (const key of ['a', 'ключ-💸', 'x'.repeat(256), 'with\u001fseparator|and:colons']) {
      const res = await t.post('/v1/reservations', { ...t.reserveBody(1), idempotency_key: key });
      expect(res.statusCode, res.body).toBe(200);
      expect(await h.system.redis.hget(h.system.keys.reserveIdempotencyIndex(t.id), idempotencyField(key))).toBe(short(json(res).reservation_id));
      // The listing's idempotency_key lookup goes through the same digest.
      const listed = json(await t.get(`/v1/reservations?idempotency_key=${encodeURIComponent(key)}`)).reservations;
      expect(listed.map((r: any) => r.reservation_id)).toEqual([json(res).reservation_id]);
    }
  });

  it('the subject is stored only when the scope path cannot give it back (key order included), and always reads back as sent', async () => {
    const t = await createTenant(h, { budgets: [['', 1000]] });
    const subjects = [
      { tenant: t.id, workspace: 'prod' },
      { tenant: t.id, workspace: 'Prod', agent: 'Bot-1' }, // mixed case: the path is lower-cased
      { tenant: t.id, agent: 'a1', dimensions: { region: 'eu' } },
      { workspace: 'w' }, // tenant omitted: the path names it
      { agent: 'bob', tenant: t.id }, // key order differs from the path's: kept as sent
    ];
    for (const subject of subjects) {
      const res = await t.post('/v1/reservations', { ...t.reserveBody(1), subject });
      expect(res.statusCode, res.body).toBe(200);
      const rid = json(res).reservation_id;
      const got = json(await t.get(`/v1/reservations/${rid}`));
      expect(JSON.stringify(got.subject)).toBe(JSON.stringify(subject));
      const raw = decodeMsgpack((await h.system.redis.hgetBuffer(h.system.keys.reservations(t.id), short(rid)))!) as Record<string, unknown>;
      const derivable = subject === subjects[0];
      expect(raw.j === undefined, JSON.stringify(subject)).toBe(derivable);
    }
  });

  it('a replayed reserve answers its first expires_at, also after an extension', async () => {
    const t = await createTenant(h);
    const body = t.reserveBody(5, { ttl_ms: 60_000 });
    const first = json(await t.post('/v1/reservations', body));
    const ext = await t.post(`/v1/reservations/${first.reservation_id}/extend`, { idempotency_key: idem('x'), extend_by_ms: 30_000 });
    expect(ext.statusCode, ext.body).toBe(200);
    expect(json(ext).expires_at_ms).toBe(first.expires_at_ms + 30_000);
    const again = await t.post('/v1/reservations', body);
    expect(again.statusCode).toBe(200);
    expect(json(again).reservation_id).toBe(first.reservation_id);
    expect(json(again).expires_at_ms).toBe(first.expires_at_ms);
    expect(json(await t.get(`/v1/reservations/${first.reservation_id}`)).expires_at_ms).toBe(first.expires_at_ms + 30_000);
    // Same key, other payload: still a mismatch, whatever the record's state.
    expect((await t.commit(first.reservation_id, 5)).statusCode).toBe(200);
    expectError(await t.post('/v1/reservations', { ...body, estimate: { unit: USD, amount: 6 } }), 409, 'IDEMPOTENCY_MISMATCH');
    expect(json(await t.post('/v1/reservations', body)).reservation_id).toBe(first.reservation_id);
  });

  it('a short id already in use is refused before anything changes', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(7);
    const before = await t.ledger();
    const o = await h.system.runtimeStore.reserve({
      tenantId: t.id, endpoint: 'reserve', mode: 'live', shortId: short(rid), payloadHash: 'p'.repeat(43), idempotencyKey: idem(),
      estimate: 3, unit: USD, ttlMs: undefined, graceMs: 0, overagePolicy: undefined, subjectJson: JSON.stringify({ tenant: t.id, workspace: 'prod' }),
      storeSubject: false, actionJson: '{"kind":"k","name":"n"}', metadataJson: undefined, scopes: [t.scope(), t.scope('workspace:prod')],
      scopePath: t.scope('workspace:prod'), minIdempotencyTtlMs: 60_000, eventIdBase: 'evt_00000000000000', requestId: 'r', traceId: 'a'.repeat(32), actorJson: '{}',
    });
    expect(o.kind).toBe('ID_COLLISION');
    expect(await t.ledger()).toEqual(before);
    expect(json(await t.get(`/v1/reservations/${rid}`)).reserved.amount).toBe(7);
  });
});

describe('retention purge (ADR 0019)', () => {
  let p: Harness;
  beforeAll(async () => {
    p = await startHarness({ keyPrefix: `cyret${randomBytes(3).toString('hex')}`, events: { reservationRetentionMs: 300, reserveReplayWindowMs: 700 } });
  });
  afterAll(async () => {
    await p.close();
  });

  it('finalized records go after the retention period with their index entries; ACTIVE ones stay; the key is then free', async () => {
    const t = await createTenant(p);
    const { redis, keys } = p.system;
    // An awkward key: the purge finds its index entry with the Lua digest, the reserve wrote it
    // with the TypeScript one, so the ik check below also proves they agree.
    const body = { ...t.reserveBody(10), idempotency_key: `ключ-💸\u001f|:${idem()}` };
    const committed = json(await t.post('/v1/reservations', body)).reservation_id;
    const released = await t.reserveOk(20);
    const active = await t.reserveOk(30, { ttl_ms: 3_600_000 });
    expect((await t.commit(committed, 10)).statusCode).toBe(200);
    expect((await t.release(released)).statusCode).toBe(200);
    // Inside the retention period nothing is purged; past it, nothing younger than the replay
    // window either (a retried reserve must still replay).
    await p.system.sweep.sweepOnce();
    expect(await redis.hlen(keys.reservations(t.id))).toBe(3);
    await sleep(400);
    await p.system.sweep.sweepOnce();
    expect(await redis.hlen(keys.reservations(t.id))).toBe(3);
    expect(json(await t.post('/v1/reservations', body)).reservation_id).toBe(committed);
    await sleep(400);
    await p.system.sweep.sweepOnce();
    expect(await redis.hkeys(keys.reservations(t.id))).toEqual([short(active)]);
    expect(await redis.hvals(keys.reserveIdempotencyIndex(t.id))).toEqual([short(active)]);
    const log = await redis.xrange(keys.reservationLog(t.id), '-', '+');
    expect(log.map(([, f]) => f[1])).toEqual([short(active)]);
    expectError(await t.get(`/v1/reservations/${committed}`), 404, 'NOT_FOUND');
    expect(json(await t.get('/v1/reservations')).reservations.map((r: any) => r.reservation_id)).toEqual([active]);
    // The sweep reports what it purged, and a purge lag below the reservations' life.
    const metric = async (name: string) => (await p.system.metrics.registry.getSingleMetric(name)!.get()).values[0]?.value;
    expect(await metric('cycles_reservations_purged_total')).toBeGreaterThanOrEqual(2);
    expect(await metric('cycles_reservation_purge_lag_seconds')).toBeGreaterThanOrEqual(0);
    expect(await metric('cycles_reservation_purge_lag_seconds')).toBeLessThan(5);
    // The idempotency window ended with the record: the same request now makes a new reservation.
    const again = json(await t.post('/v1/reservations', body));
    expect(again.reservation_id).not.toBe(committed);
    expect((await t.balance('workspace:prod')).reserved.amount).toBe(40);
  });

  it('the purge resumes through a long log in bounded calls', async () => {
    const t = await createTenant(p, { budgets: [['', 1_000_000]] });
    const rids = [];
    for (let i = 0; i < 260; i++) rids.push(t.reserveOk(1, { ttl_ms: 1000, grace_period_ms: 0 }));
    await Promise.all(rids);
    await sleep(1400);
    // One call: expires at most one batch and examines one batch of the log.
    const step = await p.system.runtimeStore.expireDue(t.id, 100, 'evt_00000000000000');
    expect(step).toMatchObject({ expired: 100, more: true });
    await sleep(800); // past the replay window too
    for (let i = 0; i < 20 && (await p.system.redis.hlen(p.system.keys.reservations(t.id))) > 0; i++) {
      await sleep(100);
      await p.system.sweep.sweepOnce();
    }
    expect(await p.system.redis.hlen(p.system.keys.reservations(t.id))).toBe(0);
    expect(await p.system.redis.xlen(p.system.keys.reservationLog(t.id))).toBe(0);
    expect((await t.balance()).reserved.amount).toBe(0);
  });
});

describe('migration from one hash per reservation (ADR 0019)', () => {
  const prefix = `cymig${randomBytes(3).toString('hex')}`;
  let a: Harness;
  let t: TestTenant;
  const now = Date.now();
  const rid = (n: number) => `rsv_${t.id}_${String(n).repeat(24)}`;
  const action = { kind: 'llm.completion', name: 'legacy' };
  let body1: Record<string, unknown>;
  let commitBody2: Record<string, unknown>;

  beforeAll(async () => {
    a = await startHarness({ keyPrefix: prefix });
    t = await createTenant(a);
  });
  afterAll(async () => {
    await a.close();
  });

  /** Writes four reservations the way the scripts before ADR 0019 stored them. */
  async function writeLegacy(redis: Redis | Harness['system']['redis']) {
    const r = redis as Redis;
    const k = a.system.keys;
    const subject = { tenant: t.id, workspace: 'prod' };
    const base = {
      tenant: t.id, subject: JSON.stringify(subject), action: JSON.stringify(action), unit: USD,
      scope_path: t.scope('workspace:prod'), mask: '11', grace: '5000', policy: 'ALLOW_IF_AVAILABLE',
    };
    body1 = { idempotency_key: 'legacy-1', subject, action, estimate: { unit: USD, amount: 100 }, ttl_ms: 60_000, metadata: { a: 1 } };
    const c1 = now - 10_000;
    // 1. ACTIVE, extended once (60 s, then 60 s more), with metadata and its idempotency record.
    await r.hset(k.legacyReservation(t.id, rid(1)), { ...base, status: 'ACTIVE', estimate: '100', created: String(c1), expires: String(c1 + 120_000), ext: '1', idem: 'legacy-1', meta: '{"a":1}' });
    await r.hset(k.idempotency(t.id, 'reserve', 'legacy-1'), { h: payloadHash({ ...body1, dry_run: false }), r: ['ALLOW', rid(1), String(c1 + 60_000), String(c1)].join('\u001f'), x: rid(1) });
    await r.zadd(k.expiryIndex(t.id), c1 + 125_000, rid(1));
    // 2. COMMITTED 40 of 100 (released 60), with its commit idempotency fields.
    commitBody2 = { idempotency_key: 'c-legacy-2', actual: { unit: USD, amount: 40 } };
    const c2 = now - 9_000;
    await r.hset(k.legacyReservation(t.id, rid(2)), {
      ...base, status: 'COMMITTED', estimate: '100', created: String(c2), expires: String(c2 + 60_000), ext: '0', idem: 'legacy-2',
      committed: '40', finalized: String(c2 + 1000), ckey: 'c-legacy-2', chash: payloadHash(commitBody2), cres: '40|60',
    });
    // 3. EXPIRED.
    const c3 = now - 8_000;
    await r.hset(k.legacyReservation(t.id, rid(3)), { ...base, status: 'EXPIRED', estimate: '50', created: String(c3), expires: String(c3 + 1000), ext: '0', idem: 'legacy-3', expired_at: String(c3 + 6000) });
    // 4. ACTIVE and already due (grace 0), its idempotency record gone.
    const c4 = now - 7_000;
    await r.hset(k.legacyReservation(t.id, rid(4)), { ...base, grace: '0', status: 'ACTIVE', estimate: '25', created: String(c4), expires: String(c4 + 2000), ext: '0', idem: 'legacy-4' });
    await r.zadd(k.expiryIndex(t.id), c4 + 2000, rid(4));
    for (const [n, c] of [[1, c1], [2, c2], [3, c3], [4, c4]] as const) await r.zadd(k.legacyReservationIndex(t.id), c, rid(n));
    // The ledgers hold what the two ACTIVE reservations hold and what the commit spent.
    for (const scope of [t.scope(), t.scope('workspace:prod')]) {
      await r.hincrby(k.budget(t.id, scope, USD), 'reserved', 125);
      await r.hincrby(k.budget(t.id, scope, USD), 'spent', 40);
    }
  }

  it('moves every reservation at start: reads, listing, replays, commit and expiry work on the moved records', async () => {
    await writeLegacy(a.system.redis);
    const k = a.system.keys;
    // A second process starting on the same data migrates before it serves.
    const b = await startHarness({ keyPrefix: prefix });
    try {
      const tb = new TestTenant(b, t.id, t.key);
      const redis = b.system.redis;
      expect(await redis.exists(k.legacyReservationIndex(t.id))).toBe(0);
      for (const n of [1, 2, 3, 4]) expect(await redis.exists(k.legacyReservation(t.id, rid(n)))).toBe(0);
      expect(await redis.exists(k.idempotency(t.id, 'reserve', 'legacy-1'))).toBe(0);
      expect(await redis.hlen(k.reservations(t.id))).toBe(4);
      expect((await redis.zrange(k.expiryIndex(t.id), 0, -1)).sort()).toEqual(['1'.repeat(24), '4'.repeat(24)]);

      const got = json(await tb.get(`/v1/reservations/${rid(1)}`));
      expect(got).toMatchObject({
        reservation_id: rid(1), status: 'ACTIVE', idempotency_key: 'legacy-1', subject: { tenant: t.id, workspace: 'prod' }, action,
        reserved: { unit: USD, amount: 100 }, created_at_ms: now - 10_000, expires_at_ms: now - 10_000 + 120_000, metadata: { a: 1 },
        scope_path: t.scope('workspace:prod'),
      });
      expect(json(await tb.get(`/v1/reservations/${rid(2)}`))).toMatchObject({ status: 'COMMITTED', committed: { unit: USD, amount: 40 }, finalized_at_ms: now - 9_000 + 1000 });
      expectError(await tb.get(`/v1/reservations/${rid(3)}`), 410, 'RESERVATION_EXPIRED');
      const listed = json(await tb.get('/v1/reservations')).reservations.map((r: any) => r.reservation_id);
      expect(listed).toEqual([rid(4), rid(3), rid(2), rid(1)]);

      // Replays answer as before the move.
      const replay = await tb.post('/v1/reservations', body1);
      expect(replay.statusCode, replay.body).toBe(200);
      expect(json(replay)).toMatchObject({ reservation_id: rid(1), expires_at_ms: now - 10_000 + 60_000 });
      const c2 = await tb.post(`/v1/reservations/${rid(2)}/commit`, commitBody2);
      expect(c2.statusCode, c2.body).toBe(200);
      expect(json(c2)).toMatchObject({ charged: { amount: 40 }, released: { amount: 60 } });

      // The moved ACTIVE reservations settle and expire exactly once.
      expect((await tb.commit(rid(1), 90)).statusCode).toBe(200);
      await b.system.sweep.sweepOnce();
      expectError(await tb.get(`/v1/reservations/${rid(4)}`), 410, 'RESERVATION_EXPIRED');
      const bal = await tb.balance('workspace:prod');
      expect(bal.reserved.amount).toBe(0);
      expect(bal.spent.amount).toBe(130);
      // Nothing left to move.
      expect(await migrateReservationLayout(b.system.runtimeStore, b.system.adminStore, pino({ level: 'silent' }))).toEqual({ tenants: 0, moved: 0 });
    } finally {
      await b.close();
    }
  });
});

describe('a process of the previous version writing after the migration', () => {
  it('its expiry entry survives the sweep until the next migration pass moves it, and the hold then expires once', async () => {
    const t = await createTenant(h);
    const k = h.system.keys;
    const redis = h.system.redis;
    const rid = `rsv_${t.id}_${'a'.repeat(24)}`;
    const created = Date.now() - 5000;
    // What reserve-7 (before ADR 0019) wrote: a due ACTIVE reservation of 30 on both ledgers.
    await redis.hset(k.legacyReservation(t.id, rid), {
      status: 'ACTIVE', tenant: t.id, subject: JSON.stringify({ tenant: t.id, workspace: 'prod' }), action: '{"kind":"k","name":"n"}',
      unit: USD, estimate: '30', scope_path: t.scope('workspace:prod'), mask: '11', created: String(created), expires: String(created + 1000),
      grace: '0', policy: 'REJECT', ext: '0', idem: 'old-process',
    });
    await redis.zadd(k.legacyReservationIndex(t.id), created, rid);
    await redis.zadd(k.expiryIndex(t.id), created + 1000, rid);
    for (const scope of [t.scope(), t.scope('workspace:prod')]) await redis.hincrby(k.budget(t.id, scope, USD), 'reserved', 30);
    // The new sweep cannot read it, and keeps its entry instead of dropping the hold's only trace.
    await h.system.runtimeStore.expireDue(t.id, 50, 'evt_00000000000000');
    expect(await redis.zscore(k.expiryIndex(t.id), rid)).not.toBeNull();
    expect((await t.balance('workspace:prod')).reserved.amount).toBe(30);
    // Reconciliation's migration pass moves it; the sweep then returns the hold, once.
    const moved = await migrateReservationLayout(h.system.runtimeStore, h.system.adminStore, pino({ level: 'silent' }));
    expect(moved.moved).toBeGreaterThanOrEqual(1);
    expect(await redis.zscore(k.expiryIndex(t.id), 'a'.repeat(24))).toBe(String(created + 1000));
    await h.system.runtimeStore.expireDue(t.id, 50, 'evt_00000000000000');
    await h.system.runtimeStore.expireDue(t.id, 50, 'evt_00000000000000');
    expect((await t.balance('workspace:prod')).reserved.amount).toBe(0);
    expect((await t.balance()).reserved.amount).toBe(0);
    expect(json(await t.get(`/v1/reservations?status=EXPIRED`)).reservations.map((r: any) => r.reservation_id)).toEqual([rid]);
  });
});

describe('MessagePack decoding', () => {
  it('refuses truncated values and trailing bytes', () => {
    const ok = Buffer.from([0x81, 0xa1, 0x61, 0xcd, 0x01, 0x2c]); // {a: 300}
    expect(decodeMsgpack(ok)).toEqual({ a: 300 });
    expect(() => decodeMsgpack(ok.subarray(0, 5))).toThrow(/truncated/);
    expect(() => decodeMsgpack(Buffer.from([0xa5, 0x61]))).toThrow(/truncated/);
    expect(() => decodeMsgpack(Buffer.concat([ok, Buffer.from([0x00])]))).toThrow(/trailing/);
    expect(() => decodeMsgpack(Buffer.from([0xc1]))).toThrow(/unsupported/);
  });

  it('reads back what Redis cmsgpack packs', async () => {
    const r = new Redis(inject('redisUrl'));
    try {
      const script = `return cmsgpack.pack({
        small = 5, neg = -3, neg2 = -200, n16 = 300, n32 = 70000, big = 1733364000123, max = 9007199254740991,
        nbig = -1733364000123, f = 1.5, s = 'x', long = string.rep('y', 300), huge = string.rep('z', 70000),
        nested = { a = 'b' }, list = { 1, 2, 3 }, t = true
      })`;
      const packed = (await r.callBuffer('EVAL', script, '0')) as Buffer;
      expect(decodeMsgpack(packed)).toEqual({
        small: 5, neg: -3, neg2: -200, n16: 300, n32: 70000, big: 1733364000123, max: 9007199254740991,
        nbig: -1733364000123, f: 1.5, s: 'x', long: 'y'.repeat(300), huge: 'z'.repeat(70000),
        nested: { a: 'b' }, list: [1, 2, 3], t: true,
      });
    } finally {
      r.disconnect();
    }
  });
});
