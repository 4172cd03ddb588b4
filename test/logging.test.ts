import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { componentLogger, createLogger } from '../src/observability/logger.js';
import { createSystem, type System } from '../src/system.js';
import { freePorts } from './global-setup.js';
import { idem, json } from './helpers.js';
import { RedisProcs } from './redis-procs.js';

/**
 * Logging (docs/operations.md, "Logging"): JSON lines, a level per component from LOG_LEVELS,
 * correlation (request id, trace id, tenant, operation) on the lines of failing requests, and no
 * secret in any line. Lines are captured in-process from the logger's destination stream.
 */

/** A pino destination that keeps every line, parsed. */
function capture() {
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      raw.push(...String(chunk).split('\n').filter((l) => l !== ''));
      done();
    },
  });
  return {
    stream,
    raw,
    lines: () => raw.map((l) => JSON.parse(l) as Record<string, any>),
  };
}

const flush = () => new Promise<void>((r) => setImmediate(r));

const procs = new RedisProcs();
afterAll(() => procs.stopAll());

describe('LOG_LEVELS', () => {
  it('parses component=level pairs and refuses unknown components, levels and malformed entries', () => {
    expect(loadConfig({}).logLevels).toEqual({});
    expect(loadConfig({ LOG_LEVELS: 'runtime=debug, workers=warn,redis=error' }).logLevels).toEqual({ runtime: 'debug', workers: 'warn', redis: 'error' });
    expect(() => loadConfig({ LOG_LEVELS: 'runtme=debug' })).toThrow(/LOG_LEVELS .*runtme=debug/);
    expect(() => loadConfig({ LOG_LEVELS: 'runtime=loud' })).toThrow(/LOG_LEVELS/);
    expect(() => loadConfig({ LOG_LEVELS: 'runtime' })).toThrow(/LOG_LEVELS/);
    expect(() => loadConfig({ LOG_LEVELS: 'runtime=debug=x' })).toThrow(/LOG_LEVELS/);
  });

  it('a component logs at its own level, above or below LOG_LEVEL; the others at LOG_LEVEL', async () => {
    const out = capture();
    const root = createLogger('info', { levels: { runtime: 'debug', workers: 'error' }, destination: out.stream });
    componentLogger(root, 'runtime').debug('runtime debug');
    componentLogger(root, 'workers').warn('workers warn');
    componentLogger(root, 'workers').error('workers error');
    componentLogger(root, 'admin').debug('admin debug');
    componentLogger(root, 'admin').info('admin info');
    root.debug('root debug');
    root.info('root info');
    await flush();
    expect(out.lines().map((l) => [l.component, l.msg])).toEqual([
      ['runtime', 'runtime debug'],
      ['workers', 'workers error'],
      ['admin', 'admin info'],
      [undefined, 'root info'],
    ]);
  });
});

describe('redaction', () => {
  it('API keys, admin keys, Authorization, key and signing secrets and Redis passwords never reach a line', async () => {
    const out = capture();
    const logger = createLogger('info', { destination: out.stream });
    const secrets = ['cyc_live_SECRET1', 'ADMIN-SECRET-2', 'Bearer SECRET3', 'whsec_SECRET4', 'redis-pw-SECRET5', 'sentinel-pw-SECRET6', 'cyc_live_SECRET7'];
    const headers = { 'x-cycles-api-key': secrets[0], 'x-admin-api-key': secrets[1], authorization: secrets[2], 'content-type': 'application/json' };
    logger.info({ req: { method: 'POST', url: '/v1/reservations', headers } }, 'request');
    logger.info({ headers }, 'headers');
    logger.info({ key_id: 'k1', key_secret: secrets[6] }, 'key created');
    logger.info({ body: { key_secret: secrets[6], signing_secret: secrets[3] } }, 'body');
    logger.info({ subscription: { webhook: { signing_secret: secrets[3] } } }, 'nested');
    logger.info({ redis: { mode: 'sentinel', password: secrets[4], sentinelPassword: secrets[5] } }, 'redis spec');
    const config = loadConfig({
      REDIS_URL: `redis://:${secrets[4]}@db:6379`,
      REDIS_PASSWORD: secrets[4],
      REDIS_SENTINELS: 's1:26379',
      REDIS_SENTINEL_MASTER: 'm',
      REDIS_SENTINEL_PASSWORD: secrets[5],
      ADMIN_API_KEY: secrets[1],
    });
    logger.info({ config }, 'configuration');
    logger.info({ adminApiKey: secrets[1], redisUrl: config.redisUrl, redisPassword: secrets[4] }, 'flat');
    await flush();
    const text = out.raw.join('\n');
    for (const s of secrets) expect(text).not.toContain(s.replace(/^Bearer /, ''));
    const lines = out.lines();
    expect(lines[0]!.req.headers).toEqual({ 'x-cycles-api-key': '[redacted]', 'x-admin-api-key': '[redacted]', authorization: '[redacted]', 'content-type': 'application/json' });
    expect(lines.find((l) => l.msg === 'configuration')!.config).toMatchObject({ redisPassword: '[redacted]', adminApiKey: '[redacted]', redisUrl: 'redis://:***@db:6379', redisSentinelMaster: 'm' });
    expect(lines.find((l) => l.msg === 'nested')!.subscription.webhook.signing_secret).toBe('[redacted]');
  });
});

describe('request logs through a running system', () => {
  let system: System | undefined;
  afterAll(async () => {
    await system?.close().catch(() => undefined);
  });

  it('a failing request logs requestId, traceId, tenant and operation under its component; secrets and the Redis password stay out', async () => {
    const [port] = await freePorts(1);
    const redisPassword = 'redis-pw-Zq81x';
    const adminKey = 'admin-key-Kp20c';
    await procs.server(port!, ['--requirepass', redisPassword]);
    const out = capture();
    const logger = createLogger('info', { levels: { admin: 'silent' }, destination: out.stream });
    const redis = { mode: 'standalone' as const, url: `redis://:${redisPassword}@127.0.0.1:${port}` };
    logger.info({ redis, redisUrl: redis.url }, 'connecting');
    system = await createSystem({
      redis,
      adminApiKey: adminKey,
      keyPrefix: 'logtest',
      logger,
      bodyLimitBytes: 65_536,
      authCacheTtlMs: 60_000,
      reservationRetentionMs: 86_400_000,
      expiryIntervalMs: 60_000,
      expiryBatchSize: 100,
    });
    const runtime = await system.buildRuntimeApp();
    const admin = await system.buildAdminApp();
    try {
      const adminHeaders = { 'x-admin-api-key': adminKey, authorization: `Bearer ${adminKey}` };
      const tenant = `log-${idem('t')}`;
      expect((await admin.inject({ method: 'POST', url: '/v1/admin/tenants', headers: adminHeaders, payload: { tenant_id: tenant, name: tenant } })).statusCode).toBe(201);
      const k = await admin.inject({ method: 'POST', url: '/v1/admin/api-keys', headers: adminHeaders, payload: { tenant_id: tenant, name: 'k', permissions: ['reservations:create', 'balances:read'] } });
      expect(k.statusCode, k.body).toBe(201);
      const keySecret = json(k).key_secret as string;
      const b = await admin.inject({
        method: 'POST',
        url: '/v1/admin/budgets',
        headers: adminHeaders,
        payload: { tenant_id: tenant, scope: `tenant:${tenant}`, unit: 'USD_MICROCENTS', allocated: { unit: 'USD_MICROCENTS', amount: 1000 } },
      });
      expect(b.statusCode, b.body).toBe(201);
      const headers = { 'x-cycles-api-key': keySecret, authorization: `Bearer ${keySecret}` };
      const body = () => ({ idempotency_key: idem('r'), subject: { tenant }, action: { kind: 'llm', name: 'm' }, estimate: { unit: 'USD_MICROCENTS', amount: 10 } });
      // A successful request: the key is now in the authentication cache.
      const ok = await runtime.inject({ method: 'POST', url: '/v1/reservations', headers, payload: body() });
      expect(ok.statusCode, ok.body).toBe(200);

      // Redis goes away: the next reserve fails with 503 and is logged at error level.
      await procs.kill(port!);
      const traceId = 'a'.repeat(16) + 'b'.repeat(16);
      const failed = await runtime.inject({ method: 'POST', url: '/v1/reservations', headers: { ...headers, 'x-cycles-trace-id': traceId }, payload: body() });
      expect(failed.statusCode, failed.body).toBe(503);
      const adminFailed = await admin.inject({ method: 'GET', url: `/v1/admin/tenants/${tenant}`, headers: adminHeaders });
      expect(adminFailed.statusCode, adminFailed.body).toBeGreaterThanOrEqual(500);
      await flush();

      const lines = out.lines();
      const errorLines = lines.filter((l) => l.msg === 'request failed');
      // The runtime failure, with its correlation and component; the admin one is silenced by LOG_LEVELS admin=silent.
      expect(errorLines).toHaveLength(1);
      expect(errorLines[0]).toMatchObject({
        level: 50,
        component: 'runtime',
        requestId: failed.headers['x-request-id'],
        traceId,
        tenant,
        operation: 'createReservation',
      });
      expect(json(failed)).toMatchObject({ request_id: failed.headers['x-request-id'], trace_id: traceId });
      // The Redis outage is logged by the redis component.
      expect(lines.some((l) => l.component === 'redis' && l.level === 50 && /Redis connection error/.test(l.msg))).toBe(true);
      expect(lines.find((l) => l.msg === 'connecting')!.redis.url).toBe(`redis://:***@127.0.0.1:${port}`);
      // Nothing secret anywhere.
      const text = out.raw.join('\n');
      for (const secret of [keySecret, adminKey, redisPassword]) expect(text).not.toContain(secret);
    } finally {
      await runtime.close();
      await admin.close();
    }
  });
});
