import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSystem, type System } from '../src/system.js';
import { freePort } from './global-setup.js';
import { ADMIN_KEY, USD, idem, json, uniqueTenantId } from './helpers.js';

/**
 * Storage outage: the app runs against its own private redis-server, which is SIGKILLed and later
 * restarted on the same port. While Redis is away requests fail fast with a 503 in the error
 * envelope (runtime digest §4.1, §5.2), health reports DOWN while liveness stays UP, and once Redis
 * is back the same process recovers without a restart.
 */

const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let port: number;
let dir: string;
let child: ChildProcess | undefined;
let system: System;
let runtime: FastifyInstance;
let admin: FastifyInstance;

function ping(): Promise<boolean> {
  return new Promise((done) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => s.write('PING\r\n'));
    s.once('data', (d) => {
      s.destroy();
      done(d.toString().startsWith('+PONG'));
    });
    s.once('error', () => done(false));
  });
}

async function startRedis(): Promise<void> {
  child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (await ping()) return;
    await sleep(25);
  }
  throw new Error(`redis-server on ${port} did not start`);
}

async function killRedis(): Promise<void> {
  const c = child;
  child = undefined;
  if (!c || c.exitCode !== null) return;
  const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
  c.kill('SIGKILL');
  await exited;
}

function expect503(res: LightMyRequestResponse): void {
  expect(res.statusCode, res.body).toBe(503);
  const body = json(res);
  expect(Object.keys(body).sort()).toEqual(['error', 'message', 'request_id', 'trace_id']);
  expect(body.error).toBe('INTERNAL_ERROR');
  expect(body.message).toMatch(/unavailable/i);
  expect(body.request_id).toBe(res.headers['x-request-id']);
  expect(body.trace_id).toBe(res.headers['x-cycles-trace-id']);
  expect(body.trace_id).toMatch(/^[0-9a-f]{32}$/);
}

/** Tenant + runtime key + one budget, provisioned through the admin app of this system. */
async function provision(allocated = 10_000): Promise<{ id: string; key: string }> {
  const id = uniqueTenantId('rf');
  const t = await admin.inject({ method: 'POST', url: '/v1/admin/tenants', headers: ADMIN, payload: { tenant_id: id, name: id } });
  expect(t.statusCode, t.body).toBe(201);
  const k = await admin.inject({
    method: 'POST',
    url: '/v1/admin/api-keys',
    headers: ADMIN,
    payload: { tenant_id: id, name: 'k', permissions: ['reservations:create', 'reservations:commit', 'reservations:release', 'reservations:list', 'balances:read'] },
  });
  expect(k.statusCode, k.body).toBe(201);
  const b = await admin.inject({ method: 'POST', url: '/v1/admin/budgets', headers: ADMIN, payload: { tenant_id: id, scope: `tenant:${id}`, unit: USD, allocated: { unit: USD, amount: allocated } } });
  expect(b.statusCode, b.body).toBe(201);
  return { id, key: json(k).key_secret };
}

function reserve(tenant: { id: string; key: string }, amount: number) {
  return runtime.inject({
    method: 'POST',
    url: '/v1/reservations',
    headers: { 'x-cycles-api-key': tenant.key },
    payload: { idempotency_key: idem('rf'), subject: { tenant: tenant.id, agent: 'x' }, action: { kind: 'k', name: 'n' }, estimate: { unit: USD, amount } },
  });
}

beforeAll(async () => {
  port = await freePort();
  dir = mkdtempSync(join(tmpdir(), 'cycles-rf-redis-'));
  await startRedis();
  system = await createSystem({
    redisUrl: `redis://127.0.0.1:${port}`,
    adminApiKey: ADMIN_KEY,
    keyPrefix: 'cyfail',
    logger: pino({ level: 'silent' }),
    bodyLimitBytes: 65_536,
    authCacheTtlMs: 1000,
    reservationRetentionMs: 86_400_000,
    expiryIntervalMs: 60_000,
    expiryBatchSize: 100,
  });
  // The server registers no 'error' listener on its clients, so ioredis prints every failed
  // reconnect to stderr; keep the test output readable (reported separately).
  system.redis.on('error', () => undefined);
  system.subscriber.on('error', () => undefined);
  runtime = await system.buildRuntimeApp();
  admin = await system.buildAdminApp();
});

afterAll(async () => {
  try {
    if (!child) await startRedis().catch(() => undefined);
    await Promise.race([(async () => {
      await runtime?.close();
      await admin?.close();
      await system?.close();
    })(), sleep(5000)]);
  } finally {
    await killRedis();
    rmSync(dir, { recursive: true, force: true });
  }
});

describe('Redis outage and recovery', () => {
  let before: { id: string; key: string };

  it('baseline with Redis up: reserve works, health UP', async () => {
    before = await provision();
    const r = await reserve(before, 100);
    expect(r.statusCode, r.body).toBe(200);
    const hRes = await runtime.inject({ method: 'GET', url: '/actuator/health' });
    expect(hRes.statusCode).toBe(200);
    expect(json(hRes)).toEqual({ status: 'UP', components: { redis: { status: 'UP' } } });
  });

  it('Redis killed: requests fail fast with a 503 envelope, health DOWN, liveness UP', async () => {
    await killRedis();
    const timed = async (send: () => Promise<LightMyRequestResponse>) => {
      const started = Date.now();
      const res = await send();
      return { res, ms: Date.now() - started };
    };
    // Issued together so the suite stays short; each is timed on its own.
    const [warm, cold, balances, adminWrite, health, adminHealth, ready, live, adminLive] = await Promise.all([
      // Warm auth cache (the key was used a moment ago) ...
      timed(() => reserve(before, 100)),
      // ... and a cold one: the key cannot be checked while storage is away, so 503, not 401.
      timed(() => reserve({ id: before.id, key: 'cyc_live_neverSeenBeforeKey000000000000' }, 100)),
      timed(() => runtime.inject({ method: 'GET', url: `/v1/balances?tenant=${before.id}`, headers: { 'x-cycles-api-key': before.key } })),
      timed(() => admin.inject({ method: 'POST', url: '/v1/admin/tenants', headers: ADMIN, payload: { tenant_id: uniqueTenantId('rf'), name: 'x' } })),
      timed(() => runtime.inject({ method: 'GET', url: '/actuator/health' })),
      timed(() => admin.inject({ method: 'GET', url: '/actuator/health' })),
      timed(() => runtime.inject({ method: 'GET', url: '/actuator/health/readiness' })),
      timed(() => runtime.inject({ method: 'GET', url: '/actuator/health/liveness' })),
      timed(() => admin.inject({ method: 'GET', url: '/actuator/health/liveness' })),
    ]);

    expect503(warm.res);
    expect(warm.ms).toBeLessThan(3000);
    expect503(cold.res);
    expect(cold.ms).toBeLessThan(5000);
    expect503(balances.res);
    expect(balances.ms).toBeLessThan(5000);
    expect503(adminWrite.res);
    expect(adminWrite.ms).toBeLessThan(5000);

    expect(health.res.statusCode).toBe(503);
    expect(json(health.res)).toEqual({ status: 'DOWN', components: { redis: { status: 'DOWN' } } });
    expect(health.res.headers['x-cycles-trace-id']).toMatch(/^[0-9a-f]{32}$/);
    expect(health.ms).toBeLessThan(2500);
    expect(adminHealth.res.statusCode).toBe(503);
    expect(ready.res.statusCode).toBe(503);
    expect(json(ready.res)).toEqual({ status: 'DOWN' });
    for (const l of [live, adminLive]) {
      expect(l.res.statusCode).toBe(200);
      expect(json(l.res)).toEqual({ status: 'UP' });
      expect(l.ms).toBeLessThan(500);
    }
  });

  it('Redis restarted on the same port: the same process recovers (health UP, reserve/commit work)', async () => {
    await startRedis();
    const started = Date.now();
    let health = await runtime.inject({ method: 'GET', url: '/actuator/health' });
    while (health.statusCode !== 200 && Date.now() - started < 8000) {
      await sleep(100);
      health = await runtime.inject({ method: 'GET', url: '/actuator/health' });
    }
    expect(health.statusCode).toBe(200);
    expect(json(health)).toEqual({ status: 'UP', components: { redis: { status: 'UP' } } });
    expect((await runtime.inject({ method: 'GET', url: '/actuator/health/readiness' })).statusCode).toBe(200);

    // The restarted server has no data (no persistence): provision afresh and run the lifecycle.
    const t = await provision(5000);
    const r = await reserve(t, 1200);
    expect(r.statusCode, r.body).toBe(200);
    const rid = json(r).reservation_id;
    const c = await runtime.inject({
      method: 'POST',
      url: `/v1/reservations/${rid}/commit`,
      headers: { 'x-cycles-api-key': t.key },
      payload: { idempotency_key: idem('c'), actual: { unit: USD, amount: 1000 } },
    });
    expect(c.statusCode, c.body).toBe(200);
    expect(json(c)).toEqual({ status: 'COMMITTED', charged: { unit: USD, amount: 1000 }, released: { unit: USD, amount: 200 } });
    const bal = await runtime.inject({ method: 'GET', url: `/v1/balances?tenant=${t.id}`, headers: { 'x-cycles-api-key': t.key } });
    expect(bal.statusCode, bal.body).toBe(200);
    const b = json(bal).balances[0];
    expect([b.allocated.amount, b.spent.amount, b.reserved.amount, b.remaining.amount]).toEqual([5000, 1000, 0, 4000]);
    // The old tenant's key died with the data.
    const old = await reserve(before, 1);
    expect(old.statusCode, old.body).toBe(401);
  });
});
