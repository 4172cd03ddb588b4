import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LightMyRequestResponse } from 'fastify';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createSystem, type System } from '../src/system.js';
import { shortOfReservationId } from '../src/domain/ids.js';
import { Keys } from '../src/store/keys.js';
import { idempotencyField } from '../src/store/reservation-codec.js';
import { RateLimitStore } from '../src/store/rate-limit-store.js';
import { registerScripts } from '../src/store/scripts.js';
import { freePort } from './global-setup.js';
import { ADMIN_KEY, TestTenant, createTenant, expectError, json, sleep, startHarness, uniqueTenantId, type Harness } from './helpers.js';

/**
 * Per-tenant and per-key runtime rate limits (ADR 0017). Buckets refill at whole requests per
 * second, so every limit here is 1 or 2 per second and a test's requests fit well inside one
 * refill interval. The harnesses share the test Redis and the default key prefix, so one
 * unlimited harness can read what a limited one wrote.
 */

const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const RUNTIME_PERMS = ['reservations:create', 'reservations:commit', 'reservations:release', 'reservations:extend', 'reservations:list', 'balances:read'];

function limits(tenant: number, key: number, burst: number) {
  return { events: { rateLimitTenantPerSecond: tenant, rateLimitKeyPerSecond: key, rateLimitBurst: burst } };
}

/** A second runtime key of the tenant, usable through harness `on`. */
async function secondKey(t: TestTenant, on: Harness = t.h): Promise<{ tenant: TestTenant; keyId: string }> {
  const res = await t.h.admin.inject({ method: 'POST', url: '/v1/admin/api-keys', headers: ADMIN, payload: { tenant_id: t.id, name: 'second', permissions: RUNTIME_PERMS } });
  expect(res.statusCode, res.body).toBe(201);
  return { tenant: new TestTenant(on, t.id, json(res).key_secret), keyId: json(res).key_id };
}

function balances(t: TestTenant) {
  return t.get(`/v1/balances?tenant=${t.id}`);
}

function expectSentinels(res: LightMyRequestResponse): void {
  expect(res.headers['x-ratelimit-remaining']).toBe('-1');
  expect(res.headers['x-ratelimit-reset']).toBe('0');
  expect(res.headers['x-ratelimit-limit']).toBeUndefined();
}

function expectLimited(res: LightMyRequestResponse, capacity: number, scope: 'tenant' | 'API key'): void {
  const body = expectError(res, 429, 'LIMIT_EXCEEDED');
  expect(Object.keys(body).sort()).toEqual(['error', 'message', 'request_id', 'trace_id']);
  expect(body.request_id).toBe(res.headers['x-request-id']);
  expect(body.message).toContain(`for this ${scope} exceeded`);
  expect(res.headers['retry-after']).toBe('1');
  expect(res.headers['x-ratelimit-limit']).toBe(String(capacity));
  expect(res.headers['x-ratelimit-remaining']).toBe('0');
  const reset = Number(res.headers['x-ratelimit-reset']);
  const nowS = Date.now() / 1000;
  // When the bucket is full again: at most `capacity` refill intervals (1 s each here) away.
  expect(reset).toBeGreaterThanOrEqual(Math.floor(nowS));
  expect(reset).toBeLessThanOrEqual(Math.ceil(nowS) + capacity + 1);
}

async function limitedCount(h: Harness, scope: 'tenant' | 'key'): Promise<number> {
  const metric = await h.system.metrics.rateLimited.get();
  return metric.values.find((v) => v.labels.scope === scope)?.value ?? 0;
}

let plain: Harness;
let keyOnly: Harness;
let tenantOnly: Harness;
let perSecond: Harness;
const opened: Harness[] = [];

beforeAll(async () => {
  plain = await startHarness();
  keyOnly = await startHarness(limits(0, 1, 3));
  tenantOnly = await startHarness(limits(1, 0, 3));
  perSecond = await startHarness(limits(0, 1, 1));
  opened.push(plain, keyOnly, tenantOnly, perSecond);
});

afterAll(async () => {
  await Promise.all(opened.map((h) => h.close()));
});

describe('runtime rate limits over HTTP', () => {
  it('off by default: no limit, and every /v1 response keeps the reference sentinels (EV-092)', async () => {
    const t = await createTenant(plain);
    for (let i = 0; i < 5; i++) {
      const res = await balances(t);
      expect(res.statusCode, res.body).toBe(200);
      expectSentinels(res);
    }
    const r = await t.reserve(100);
    expect(r.statusCode, r.body).toBe(200);
    expectSentinels(r);
    expect(await plain.system.redis.exists(plain.system.keys.rateLimitTenant(t.id))).toBe(0);
  });

  it('per key: the key bucket runs dry with 429 LIMIT_EXCEEDED and its headers; another key of the tenant is unaffected', async () => {
    const t = await createTenant(keyOnly);
    const before = await limitedCount(keyOnly, 'key');
    for (const remaining of [2, 1, 0]) {
      const res = await balances(t);
      expect(res.statusCode, res.body).toBe(200);
      expect(res.headers['x-ratelimit-limit']).toBe('3');
      expect(res.headers['x-ratelimit-remaining']).toBe(String(remaining));
      expect(Number(res.headers['x-ratelimit-reset'])).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000));
      expect(res.headers['retry-after']).toBeUndefined();
    }
    expectLimited(await balances(t), 3, 'API key');
    expect(await limitedCount(keyOnly, 'key')).toBe(before + 1);

    const other = await secondKey(t);
    const res = await balances(other.tenant);
    expect(res.statusCode, res.body).toBe(200);
    expect(res.headers['x-ratelimit-remaining']).toBe('2');
    // Its own bucket, next to the tenant's records, expiring when full again.
    const pttl = await keyOnly.system.redis.pttl(keyOnly.system.keys.rateLimitKey(t.id, other.keyId));
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(3000);
    expect(await keyOnly.system.redis.exists(keyOnly.system.keys.rateLimitTenant(t.id))).toBe(0);
  });

  it('per tenant: two keys of one tenant share the tenant bucket', async () => {
    const t = await createTenant(tenantOnly);
    const other = (await secondKey(t)).tenant;
    const before = await limitedCount(tenantOnly, 'tenant');
    expect((await balances(t)).statusCode).toBe(200);
    expect((await balances(other)).statusCode).toBe(200);
    const third = await balances(t);
    expect(third.statusCode, third.body).toBe(200);
    expect(third.headers['x-ratelimit-remaining']).toBe('0');
    expectLimited(await balances(other), 3, 'tenant');
    expectLimited(await balances(t), 3, 'tenant');
    expect(await limitedCount(tenantOnly, 'tenant')).toBe(before + 2);

    // Another tenant has its own bucket.
    const u = await createTenant(tenantOnly);
    expect((await balances(u)).statusCode).toBe(200);
  });

  it('only tenant-key requests are limited: admin-key runtime calls, health, metrics and public endpoints are not', async () => {
    const t = await createTenant(tenantOnly);
    for (let i = 0; i < 3; i++) expect((await balances(t)).statusCode).toBe(200);
    expect((await balances(t)).statusCode).toBe(429);

    const asAdmin = await tenantOnly.runtime.inject({ method: 'GET', url: `/v1/reservations?tenant=${t.id}`, headers: ADMIN });
    expect(asAdmin.statusCode, asAdmin.body).toBe(200);
    expectSentinels(asAdmin);
    const health = await tenantOnly.runtime.inject({ method: 'GET', url: '/actuator/health' });
    expect(health.statusCode).toBe(200);
    expect(health.headers['x-ratelimit-remaining']).toBeUndefined();
    const metrics = await tenantOnly.runtime.inject({ method: 'GET', url: '/actuator/prometheus', headers: ADMIN });
    expect(metrics.statusCode).toBe(200);
    expect(metrics.body).toMatch(/cycles_rate_limited_total\{scope="tenant"\} [1-9]/);
    const jwks = await tenantOnly.runtime.inject({ method: 'GET', url: '/v1/.well-known/cycles-jwks.json' });
    expect(jwks.statusCode).toBe(200);
    expect(jwks.headers['x-ratelimit-limit']).toBe('300');
    // A wrong key is refused by authentication, not by the limiter.
    const bad = await tenantOnly.runtime.inject({ method: 'GET', url: `/v1/balances?tenant=${t.id}`, headers: { 'x-cycles-api-key': 'cyc_live_nope' } });
    expect(bad.statusCode).toBe(401);
    expectSentinels(bad);
  });

  it('a 429 writes nothing (ledger, reservation, idempotency record, outbox); the bucket refills and the same request then runs for the first time', async () => {
    const t = await createTenant(perSecond);
    const reader = new TestTenant(plain, t.id, t.key);
    const { keys, redis } = perSecond.system;
    expect((await t.reserve(100)).statusCode).toBe(200);

    const ledgerBefore = await reader.ledger();
    const outboxBefore = await redis.xlen(keys.outbox(t.id));
    const listedBefore = json(await reader.get(`/v1/reservations?tenant=${t.id}&limit=200`)).reservations.length;
    const body = t.reserveBody(250);
    const refused = await t.post('/v1/reservations', body);
    expectLimited(refused, 1, 'API key');
    expect(await reader.ledger()).toEqual(ledgerBefore);
    expect(await redis.xlen(keys.outbox(t.id))).toBe(outboxBefore);
    expect(await redis.hget(keys.reserveIdempotencyIndex(t.id), idempotencyField(body.idempotency_key))).toBeNull();
    expect(json(await reader.get(`/v1/reservations?tenant=${t.id}&limit=200`)).reservations.length).toBe(listedBefore);

    await sleep(Number(refused.headers['retry-after']) * 1000 + 100);
    const retried = await t.post('/v1/reservations', body);
    expect(retried.statusCode, retried.body).toBe(200);
    expect(retried.headers['x-ratelimit-remaining']).toBe('0');
    const after = await reader.ledger();
    expect(after[`${t.scope('workspace:prod')}|USD_MICROCENTS`]!.reserved).toBe(ledgerBefore[`${t.scope('workspace:prod')}|USD_MICROCENTS`]!.reserved + 250);
    expect(await redis.hget(keys.reserveIdempotencyIndex(t.id), idempotencyField(body.idempotency_key))).toBe(shortOfReservationId(json(retried).reservation_id));
  });

  it('two instances with the same key prefix share one tenant bucket', async () => {
    const a = await startHarness(limits(1, 0, 4));
    opened.push(a);
    const b = await startHarness(limits(1, 0, 4));
    opened.push(b);
    const t = await createTenant(a);
    const onA = t;
    const onB = new TestTenant(b, t.id, t.key);
    const codes = [];
    for (const who of [onA, onB, onA, onB]) codes.push((await balances(who)).statusCode);
    expect(codes).toEqual([200, 200, 200, 200]);
    expectLimited(await balances(onA), 4, 'tenant');
    expectLimited(await balances(onB), 4, 'tenant');
  });

  it('a Redis error in the limiter fails open: requests pass with the sentinels', async () => {
    const t = await createTenant(tenantOnly);
    // A bucket key of the wrong type makes the script fail with a real Redis WRONGTYPE error.
    await tenantOnly.system.redis.hset(tenantOnly.system.keys.rateLimitTenant(t.id), 'not', 'a bucket');
    for (let i = 0; i < 5; i++) {
      const res = await balances(t);
      expect(res.statusCode, res.body).toBe(200);
      expectSentinels(res);
    }
    await tenantOnly.system.redis.del(tenantOnly.system.keys.rateLimitTenant(t.id));
  });
});

describe('the rate-limit script', () => {
  let client: Redis;
  let store: RateLimitStore;
  const keys = new Keys('cytest');
  const off = { ratePerSecond: 0, capacity: 0 };

  beforeAll(() => {
    client = new Redis(inject('redisUrl'));
    store = new RateLimitStore(registerScripts(client), keys);
  });
  afterAll(async () => {
    await client.quit();
  });

  const state = async (tenantId: string, keyId: string) =>
    client.mget(keys.rateLimitTenant(tenantId), keys.rateLimitKey(tenantId, keyId));

  it('a refusal by the key bucket takes nothing from the tenant bucket, and the other way round', async () => {
    const t = uniqueTenantId('rl');
    // The wide bucket refills slowly too, so its key (which lives until the bucket is full again)
    // cannot expire between the two reads being compared, even on a loaded machine.
    const wide = { ratePerSecond: 1, capacity: 2000 };
    const narrow = { ratePerSecond: 1, capacity: 2 };
    expect((await store.take(t, 'k1', wide, narrow)).allowed).toBe(true);
    expect((await store.take(t, 'k1', wide, narrow)).allowed).toBe(true);
    const saved = await state(t, 'k1');
    const refused = await store.take(t, 'k1', wide, narrow);
    expect(refused).toMatchObject({ allowed: false, scope: 'key', capacity: 2, remaining: 0 });
    expect(refused.retryAfterMs).toBeGreaterThan(0);
    expect(refused.retryAfterMs).toBeLessThanOrEqual(1000);
    expect(await state(t, 'k1')).toEqual(saved);

    const u = uniqueTenantId('rl');
    expect((await store.take(u, 'k1', narrow, wide)).allowed).toBe(true);
    expect((await store.take(u, 'k1', narrow, wide)).allowed).toBe(true);
    const saved2 = await state(u, 'k1');
    expect(await store.take(u, 'k1', narrow, wide)).toMatchObject({ allowed: false, scope: 'tenant', capacity: 2 });
    expect(await state(u, 'k1')).toEqual(saved2);
  });

  it('when both buckets refuse, the figures name the one that makes the caller wait longest', async () => {
    const t = uniqueTenantId('rl');
    const slow = { ratePerSecond: 1, capacity: 1 };
    const fast = { ratePerSecond: 2, capacity: 1 };
    expect((await store.take(t, 'k1', fast, slow)).allowed).toBe(true);
    const refused = await store.take(t, 'k1', fast, slow);
    expect(refused).toMatchObject({ allowed: false, scope: 'key' });
    expect(refused.retryAfterMs).toBeGreaterThan(500);
  });

  it('reports the bucket with the fewest tokens left, and idle buckets expire when full again', async () => {
    const t = uniqueTenantId('rl');
    const first = await store.take(t, 'k1', { ratePerSecond: 10, capacity: 20 }, { ratePerSecond: 1, capacity: 5 });
    expect(first).toMatchObject({ allowed: true, scope: 'key', capacity: 5, remaining: 4 });
    const pttlTenant = await client.pttl(keys.rateLimitTenant(t));
    const pttlKey = await client.pttl(keys.rateLimitKey(t, 'k1'));
    expect(pttlTenant).toBeGreaterThan(0);
    expect(pttlTenant).toBeLessThanOrEqual(100);
    expect(pttlKey).toBeGreaterThan(900);
    expect(pttlKey).toBeLessThanOrEqual(1000);
    const nowMs = Date.now();
    expect(first.fullAtMs).toBeGreaterThan(nowMs - 1000);
    expect(first.fullAtMs).toBeLessThanOrEqual(nowMs + 1100);
    // A limit that is off writes no bucket.
    const u = uniqueTenantId('rl');
    expect((await store.take(u, 'k1', off, { ratePerSecond: 1, capacity: 1 })).allowed).toBe(true);
    expect(await client.exists(keys.rateLimitTenant(u))).toBe(0);
  });
});

/**
 * Fail open against a private redis-server: paused (the limiter times out) and then killed (the
 * limiter fails). A request the empty bucket would refuse is never answered 429; with Redis gone
 * the ledger call fails on its own (503). The warning is logged once, not per request.
 */
describe('fail open when the limiter cannot reach Redis', () => {
  let port: number;
  let dir: string;
  let child: ChildProcess | undefined;
  let system: System;
  let h: Harness;
  const logLines: string[] = [];

  const ping = (): Promise<boolean> =>
    new Promise((done) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => s.write('PING\r\n'));
      s.once('data', (d) => {
        s.destroy();
        done(d.toString().startsWith('+PONG'));
      });
      s.once('error', () => done(false));
    });

  async function killRedis(): Promise<void> {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGKILL');
    await exited;
  }

  beforeAll(async () => {
    port = await freePort();
    dir = mkdtempSync(join(tmpdir(), 'cycles-rl-redis-'));
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
    const deadline = Date.now() + 10_000;
    while (!(await ping())) {
      if (Date.now() > deadline) throw new Error(`redis-server on ${port} did not start`);
      await sleep(25);
    }
    system = await createSystem({
      redisUrl: `redis://127.0.0.1:${port}`,
      adminApiKey: ADMIN_KEY,
      keyPrefix: 'cyrl',
      logger: pino({ level: 'warn' }, { write: (line: string) => void logLines.push(line) }),
      bodyLimitBytes: 65_536,
      // The key stays authenticated from the cache while Redis is away, so the limiter is reached.
      authCacheTtlMs: 60_000,
      reservationRetentionMs: 86_400_000,
      expiryIntervalMs: 60_000,
      expiryBatchSize: 100,
      rateLimitKeyPerSecond: 1,
      rateLimitBurst: 1,
    });
    h = { system, runtime: await system.buildRuntimeApp(), admin: await system.buildAdminApp(), close: async () => undefined };
  });

  afterAll(async () => {
    try {
      await Promise.race([(async () => {
        await h?.runtime.close();
        await h?.admin.close();
        await system?.close();
      })(), sleep(5000)]);
    } finally {
      await killRedis();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const warnings = () => logLines.filter((l) => l.includes('rate limiter unavailable')).length;

  it('a limiter call that times out or fails lets the request through (never 429), with one warning', async () => {
    const t = await createTenant(h, { budgets: [['', 1_000_000]] });
    expect((await balances(t)).statusCode).toBe(200);
    expect((await balances(t)).statusCode).toBe(429);
    const admin = new Redis(`redis://127.0.0.1:${port}`);
    try {
      // Writes (every script call) wait while paused: the limiter gives up after its timeout,
      // and the request's own Redis call runs once the pause ends.
      await admin.call('CLIENT', 'PAUSE', '1500', 'WRITE');
      const res = await t.reserve(100);
      expect(res.statusCode, res.body).toBe(200);
      expectSentinels(res);
    } finally {
      await admin.call('CLIENT', 'UNPAUSE').catch(() => undefined);
      admin.disconnect();
    }
    expect(warnings()).toBe(1);

    // Redis gone: the limiter fails open again (no 429 although the bucket is empty), and the
    // reservation itself fails with the storage error. No second warning within the minute.
    expect((await t.reserve(100)).statusCode).toBe(429);
    system.redis.on('error', () => undefined);
    system.subscriber.on('error', () => undefined);
    await killRedis();
    for (const res of await Promise.all([t.reserve(100), t.reserve(100)])) {
      expect(res.statusCode, res.body).toBe(503);
      expect(json(res).error).toBe('INTERNAL_ERROR');
      expectSentinels(res);
    }
    expect(warnings()).toBe(1);
  });
});
