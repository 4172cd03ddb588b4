import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createBaseApp } from '../src/api/base.js';
import { authHooks } from '../src/api/plugins/auth.js';
import { AUTH_FAILURE_WINDOW_MS, authFailureThrottle, clientKey } from '../src/api/plugins/auth-throttle.js';
import { loadConfig } from '../src/config.js';
import { AuthFailureStore } from '../src/store/auth-failures.js';
import { Keys } from '../src/store/keys.js';
import { createRedis } from '../src/store/redis.js';
import { createSystem, type System } from '../src/system.js';
import { ADMIN_KEY, json, sleep, uniqueTenantId } from './helpers.js';

/**
 * Optional throttle of failed authentications on the admin plane (ADR 0016; admin digest §0.2:
 * 429 LIMIT_EXCEEDED, no audit row). Counters are real Redis keys shared by all instances.
 */

const PREFIX = 'cythrottle';
const LIMIT = 3;
const ADMIN = { 'x-admin-api-key': ADMIN_KEY };

interface Plane {
  system: System;
  admin: FastifyInstance;
  close(): Promise<void>;
}

async function startAdmin(authFailureLimit: number | undefined): Promise<Plane> {
  const system = await createSystem({
    redisUrl: inject('redisUrl'),
    adminApiKey: ADMIN_KEY,
    keyPrefix: PREFIX,
    logger: pino({ level: 'silent' }),
    bodyLimitBytes: 65_536,
    authCacheTtlMs: 1000,
    reservationRetentionMs: 86_400_000,
    expiryIntervalMs: 60_000,
    expiryBatchSize: 100,
    ...(authFailureLimit === undefined ? {} : { authFailureLimit }),
  });
  const admin = await system.buildAdminApp();
  return {
    system,
    admin,
    async close() {
      await admin.close();
      await system.close();
    },
  };
}

/** A client address no other test uses, so tests never share a counter. */
function freshIp(): string {
  const b = randomBytes(3);
  return `10.${b[0]}.${b[1]}.${b[2]}`;
}

/**
 * Windows are fixed 60 s slots of the wall clock. A test that needs its requests to land in one
 * window waits out the last few seconds of the current one first.
 */
async function awayFromWindowEnd(marginMs = 10_000): Promise<void> {
  const left = AUTH_FAILURE_WINDOW_MS - (Date.now() % AUTH_FAILURE_WINDOW_MS);
  if (left < marginMs) await sleep(left + 50);
}

function counterKey(ip: string, atMs = Date.now()): string {
  return new Keys(PREFIX).authFailures(ip, Math.floor(atMs / AUTH_FAILURE_WINDOW_MS));
}

function expectThrottled(res: LightMyRequestResponse): void {
  expect(res.statusCode, res.body).toBe(429);
  const body = json(res);
  expect(Object.keys(body).sort()).toEqual(['error', 'message', 'request_id', 'trace_id']);
  expect(body.error).toBe('LIMIT_EXCEEDED');
  expect(body.message).toBe('Too many failed authentication attempts; retry later');
  expect(body.request_id).toBe(res.headers['x-request-id']);
  expect(body.trace_id).toBe(res.headers['x-cycles-trace-id']);
  const retryAfter = Number(res.headers['retry-after']);
  expect(Number.isInteger(retryAfter)).toBe(true);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(60);
}

let on: Plane;
beforeAll(async () => {
  on = await startAdmin(LIMIT);
});
afterAll(async () => on.close());

describe('throttle on (CYCLES_AUTH_FAILURE_LIMIT=3)', () => {
  it('after 3 failed authentications, the next request from that IP gets 429 even with a valid key; nothing is created', async () => {
    await awayFromWindowEnd();
    const ip = freshIp();
    // Three kinds of failure: no key (401), a wrong admin key (401), an unknown tenant key (403).
    const failures = [
      await on.admin.inject({ method: 'GET', url: '/v1/admin/tenants', remoteAddress: ip }),
      await on.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: { 'x-admin-api-key': 'wrong' }, remoteAddress: ip }),
      await on.admin.inject({ method: 'GET', url: '/v1/admin/budgets', headers: { 'x-cycles-api-key': 'cyc_live_nope' }, remoteAddress: ip }),
    ];
    expect(failures.map((r) => r.statusCode)).toEqual([401, 401, 403]);
    expect(await on.system.redis.get(counterKey(ip))).toBe('3');

    const tenantId = uniqueTenantId('thr');
    const refused = await on.admin.inject({
      method: 'POST',
      url: '/v1/admin/tenants',
      headers: ADMIN,
      payload: { tenant_id: tenantId, name: tenantId },
      remoteAddress: ip,
    });
    expectThrottled(refused);
    // Refused before any key check: the count does not grow and the tenant does not exist.
    expect(await on.system.redis.get(counterKey(ip))).toBe('3');
    const lookup = await on.admin.inject({ method: 'GET', url: `/v1/admin/tenants/${tenantId}`, headers: ADMIN, remoteAddress: freshIp() });
    expect(lookup.statusCode).toBe(404);
    // Still refused, whatever the key.
    expectThrottled(await on.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: { 'x-admin-api-key': 'wrong' }, remoteAddress: ip }));
    expect(await on.system.redis.get(counterKey(ip))).toBe('3');
  });

  it('other IPs, health probes and CORS preflights are not throttled', async () => {
    await awayFromWindowEnd();
    const ip = freshIp();
    for (let i = 0; i < LIMIT; i += 1) {
      expect((await on.admin.inject({ method: 'GET', url: '/v1/admin/overview', remoteAddress: ip })).statusCode).toBe(401);
    }
    expectThrottled(await on.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: ADMIN, remoteAddress: ip }));
    expect((await on.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: ADMIN, remoteAddress: freshIp() })).statusCode).toBe(200);
    for (const url of ['/actuator/health', '/actuator/health/liveness', '/actuator/health/readiness']) {
      expect((await on.admin.inject({ method: 'GET', url, remoteAddress: ip })).statusCode, url).toBe(200);
    }
    const pre = await on.admin.inject({
      method: 'OPTIONS',
      url: '/v1/admin/tenants',
      headers: { origin: 'http://localhost:5173', 'access-control-request-method': 'GET' },
      remoteAddress: ip,
    });
    expect(pre.statusCode).toBe(204);
    // The dashboard can read the 429 and its Retry-After.
    const cors = await on.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: { origin: 'http://localhost:5173', ...ADMIN }, remoteAddress: ip });
    expectThrottled(cors);
    expect(cors.headers['access-control-allow-origin']).toBe('http://localhost:5173');
    expect(String(cors.headers['access-control-expose-headers'])).toMatch(/Retry-After/);
  });

  it('successes, missing permissions, 404s and validation errors do not count', async () => {
    await awayFromWindowEnd();
    const ip = freshIp();
    const tenantId = uniqueTenantId('thr');
    expect((await on.admin.inject({ method: 'POST', url: '/v1/admin/tenants', headers: ADMIN, payload: { tenant_id: tenantId, name: tenantId }, remoteAddress: ip })).statusCode).toBe(201);
    const key = await on.admin.inject({
      method: 'POST',
      url: '/v1/admin/api-keys',
      headers: ADMIN,
      payload: { tenant_id: tenantId, name: 'reader', permissions: ['balances:read'] },
      remoteAddress: ip,
    });
    expect(key.statusCode, key.body).toBe(201);
    const secret = json(key).key_secret as string;
    for (let i = 0; i < LIMIT + 2; i += 1) {
      // A valid key without the permission: 403 INSUFFICIENT_PERMISSIONS, but authenticated.
      const denied = await on.admin.inject({ method: 'POST', url: '/v1/admin/policies', headers: { 'x-cycles-api-key': secret }, payload: {}, remoteAddress: ip });
      expect(denied.statusCode, denied.body).toBe(403);
      expect(json(denied).error).toBe('INSUFFICIENT_PERMISSIONS');
      expect((await on.admin.inject({ method: 'GET', url: '/v1/admin/tenants/does-not-exist', headers: ADMIN, remoteAddress: ip })).statusCode).toBe(404);
      expect((await on.admin.inject({ method: 'POST', url: '/v1/admin/tenants', headers: ADMIN, payload: { bogus: 1 }, remoteAddress: ip })).statusCode).toBe(400);
      expect((await on.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: ADMIN, remoteAddress: ip })).statusCode).toBe(200);
    }
    expect(await on.system.redis.exists(counterKey(ip))).toBe(0);
  });

  it('the counter lives in Redis until its window ends, and is shared by every instance', async () => {
    await awayFromWindowEnd();
    const ip = freshIp();
    const other = await startAdmin(LIMIT);
    try {
      // Failures spread over two instances add up; both then refuse.
      expect((await on.admin.inject({ method: 'GET', url: '/v1/admin/tenants', remoteAddress: ip })).statusCode).toBe(401);
      expect((await other.admin.inject({ method: 'GET', url: '/v1/admin/tenants', remoteAddress: ip })).statusCode).toBe(401);
      expect((await on.admin.inject({ method: 'GET', url: '/v1/admin/tenants', remoteAddress: ip })).statusCode).toBe(401);
      expectThrottled(await other.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: ADMIN, remoteAddress: ip }));
      expectThrottled(await on.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: ADMIN, remoteAddress: ip }));
    } finally {
      await other.close();
    }
    const now = Date.now();
    const ttl = await on.system.redis.pttl(counterKey(ip, now));
    const toWindowEnd = AUTH_FAILURE_WINDOW_MS - (now % AUTH_FAILURE_WINDOW_MS);
    expect(ttl).toBeGreaterThan(0);
    // PTTL is read a moment after the counter was written; allow for millisecond rounding.
    expect(ttl).toBeLessThanOrEqual(toWindowEnd + 5_000 + 50);
  });

  it('a throttled request writes no audit row; the failures before it do', async () => {
    await awayFromWindowEnd();
    const ip = freshIp();
    const id = (label: string) => `thr-${label}-${randomBytes(4).toString('hex')}`;
    const failIds = [id('f1'), id('f2'), id('f3')];
    for (const requestId of failIds) {
      await on.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: { 'x-request-id': requestId }, remoteAddress: ip });
    }
    const throttledId = id('t');
    expectThrottled(await on.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: { ...ADMIN, 'x-request-id': throttledId }, remoteAddress: ip }));
    // Audit rows are written after the answer; a later failure's row shows the writes have landed.
    const markerId = id('m');
    await on.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: { 'x-request-id': markerId }, remoteAddress: freshIp() });
    const rows = async (requestId: string) =>
      json(await on.admin.inject({ method: 'GET', url: `/v1/admin/audit/logs?request_id=${requestId}`, headers: ADMIN, remoteAddress: freshIp() })).logs as any[];
    const deadline = Date.now() + 5_000;
    while ((await rows(markerId)).length === 0 && Date.now() < deadline) await sleep(25);
    expect(await rows(markerId)).toHaveLength(1);
    for (const requestId of failIds) expect(await rows(requestId), requestId).toHaveLength(1);
    expect(await rows(throttledId)).toEqual([]);
  });
});

describe('throttle off', () => {
  it('by default (CYCLES_AUTH_FAILURE_LIMIT=0) failures are neither counted nor throttled', async () => {
    const off = await startAdmin(undefined);
    try {
      const ip = freshIp();
      for (let i = 0; i < 10; i += 1) {
        expect((await off.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: { 'x-admin-api-key': 'wrong' }, remoteAddress: ip })).statusCode).toBe(401);
      }
      expect((await off.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: ADMIN, remoteAddress: ip })).statusCode).toBe(200);
      expect(await off.system.redis.exists(counterKey(ip))).toBe(0);
    } finally {
      await off.close();
    }
  });

  it('config: CYCLES_AUTH_FAILURE_LIMIT defaults to 0 and must be an integer ≥ 0', () => {
    expect(loadConfig({}).authFailureLimit).toBe(0);
    expect(loadConfig({ CYCLES_AUTH_FAILURE_LIMIT: '20' }).authFailureLimit).toBe(20);
    for (const bad of ['-1', '2.5', 'ten']) {
      expect(() => loadConfig({ CYCLES_AUTH_FAILURE_LIMIT: bad }), bad).toThrow(/CYCLES_AUTH_FAILURE_LIMIT/);
    }
  });
});

/**
 * The throttle on a minimal plane with a controlled clock: exact Retry-After, the window
 * rolling over, and failing open when the counter's Redis is gone or does not answer.
 */
describe('windows and failing open', () => {
  let system: System;
  beforeAll(async () => {
    system = on.system;
  });

  async function plane(counter: AuthFailureStore, clock: { now: number }, limit = 2): Promise<FastifyInstance> {
    const app = createBaseApp({ plane: 'admin', logger: pino({ level: 'silent' }), bodyLimitBytes: 65_536, metrics: system.metrics });
    const hooks = authHooks(system.authenticator, 'FORBIDDEN');
    authFailureThrottle(app, { limit, counter, now: () => clock.now }, app.log);
    app.get('/v1/admin/probe', { config: { operation: 'probe' }, onRequest: hooks.admin() }, async () => ({ ok: true }));
    await app.ready();
    return app;
  }

  it('Retry-After counts the seconds to the end of the window; the next window starts from zero', async () => {
    const ip = freshIp();
    // A window far from the real clock, so this test owns its counters.
    const windowStart = (Math.floor(Date.now() / AUTH_FAILURE_WINDOW_MS) + 1000) * AUTH_FAILURE_WINDOW_MS;
    const clock = { now: windowStart + 10_000 };
    const app = await plane(new AuthFailureStore(system.redis, new Keys(PREFIX)), clock);
    try {
      const probe = (headers: Record<string, string> = {}) => app.inject({ method: 'GET', url: '/v1/admin/probe', headers, remoteAddress: ip });
      expect((await probe()).statusCode).toBe(401);
      expect((await probe({ 'x-admin-api-key': 'wrong' })).statusCode).toBe(401);
      const at10s = await probe(ADMIN);
      expectThrottled(at10s);
      expect(at10s.headers['retry-after']).toBe('50');
      clock.now = windowStart + 59_500;
      expect((await probe(ADMIN)).headers['retry-after']).toBe('1');
      clock.now = windowStart + 59_999;
      expect((await probe(ADMIN)).headers['retry-after']).toBe('1');
      // The next window: a fresh count.
      clock.now = windowStart + AUTH_FAILURE_WINDOW_MS;
      expect((await probe(ADMIN)).statusCode).toBe(200);
      expect((await probe()).statusCode).toBe(401);
      expect((await probe(ADMIN)).statusCode).toBe(200);
    } finally {
      await app.close();
    }
  });

  it('fails open when the counter Redis is closed: failures answer 401, valid keys 200', async () => {
    const broken = createRedis(inject('redisUrl'), 'throttle-closed');
    await broken.ping();
    broken.disconnect();
    const clock = { now: Date.now() };
    const app = await plane(new AuthFailureStore(broken, new Keys(PREFIX)), clock, 1);
    try {
      const ip = freshIp();
      for (let i = 0; i < 3; i += 1) {
        expect((await app.inject({ method: 'GET', url: '/v1/admin/probe', remoteAddress: ip })).statusCode).toBe(401);
      }
      expect((await app.inject({ method: 'GET', url: '/v1/admin/probe', headers: ADMIN, remoteAddress: ip })).statusCode).toBe(200);
    } finally {
      await app.close();
    }
  });

  it('fails open, within its time bound, when the counter Redis accepts connections but never answers', async () => {
    // A TCP server that accepts and stays silent: every command would wait for ever.
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((s) => {
      sockets.add(s);
      s.on('error', () => {});
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as net.AddressInfo).port;
    const hung = createRedis(`redis://127.0.0.1:${port}`, 'throttle-hung');
    hung.on('error', () => {});
    const app = await plane(new AuthFailureStore(hung, new Keys(PREFIX)), { now: Date.now() }, 1);
    try {
      const ip = freshIp();
      // Without the bound (AUTH_THROTTLE_TIMEOUT_MS) these would wait for ever, past the test timeout.
      expect((await app.inject({ method: 'GET', url: '/v1/admin/probe', remoteAddress: ip })).statusCode).toBe(401);
      expect((await app.inject({ method: 'GET', url: '/v1/admin/probe', headers: ADMIN, remoteAddress: ip })).statusCode).toBe(200);
    } finally {
      await app.close();
      hung.disconnect();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it('an IPv4-mapped IPv6 address counts as the IPv4 client', () => {
    expect(clientKey('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(clientKey('2001:db8::1')).toBe('2001:db8::1');
    expect(clientKey(undefined)).toBe('unknown');
  });
});
