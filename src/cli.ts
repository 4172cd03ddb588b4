#!/usr/bin/env node
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import cluster from 'node:cluster';
import net from 'node:net';
import { AggregatorRegistry } from 'prom-client';
import closeWithGrace from 'close-with-grace';
import { loadConfig, type Config } from './config.js';
import { createLogger } from './observability/logger.js';
import { createSystem, type System } from './system.js';
import { buildStandbyApp } from './api/standby-app.js';
import { checkRedisSettings, describeRedis, waitForRedis, type RedisSpec } from './store/redis.js';
import type { FastifyInstance } from 'fastify';
import type { TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { ApiKeyCreateRequest, BudgetCreateRequest, BudgetFundingRequest, TenantCreateRequest } from './api/schemas/admin.js';

/**
 * Composition root and command line: `cycles all|runtime|admin|events` start services;
 * `cycles tenant create`, `cycles key create`, `cycles budget create|fund` run the same store
 * functions the admin API uses, for people without curl at hand.
 */

const USAGE = `usage:
  cycles all | runtime | admin | events        start services (all: every plane in one process)
  cycles tenant create <tenant_id> [--name N]
  cycles key create <tenant_id> [--name N] [--permissions p1,p2]
  cycles budget create <tenant_id> <scope> <unit> <allocated> [--overdraft-limit N]
  cycles budget fund <tenant_id> <scope> <unit> <CREDIT|DEBIT|RESET|RESET_SPENT|REPAY_DEBT> <amount>
environment: REDIS_URL, ADMIN_API_KEY and the settings in docs/configuration.md`;

/** Port of the redis-server `npm start` starts when no other Redis is available. */
const EMBEDDED_REDIS_PORT = 6390;
/** How long to wait for an embedded redis-server to answer before giving up. */
const EMBEDDED_START_TIMEOUT_MS = 10_000;

function portAnswers(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((done) => {
    const socket = net.connect({ host, port });
    const finish = (ok: boolean) => {
      socket.destroy();
      done(ok);
    };
    socket.setTimeout(timeoutMs, () => finish(false));
    socket.once('connect', () => {
      socket.write('PING\r\n');
      socket.once('data', (d) => finish(d.toString().startsWith('+PONG')));
    });
    socket.once('error', () => finish(false));
  });
}

/** Username, password, TLS and db carried by a URL (for Sentinel, whose address comes from the sentinels). */
function urlCredentials(url: string | undefined): { username?: string; password?: string; tls: boolean; db?: number } {
  if (!url) return { tls: false };
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error('REDIS_URL is not a valid URL');
  }
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : undefined;
  return {
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    tls: u.protocol === 'rediss:',
    ...(db !== undefined && Number.isInteger(db) ? { db } : {}),
  };
}

/**
 * The configured topology (ADR 0018): Sentinel when REDIS_SENTINELS is set, Cluster when
 * REDIS_CLUSTER_NODES is set, else REDIS_URL; undefined when none is set. REDIS_USERNAME and
 * REDIS_PASSWORD authenticate to the data nodes (for a standalone URL, only when the URL carries
 * none); with Sentinel the URL may carry them instead.
 */
function configuredRedis(config: Config): RedisSpec | undefined {
  const username = config.redisUsername;
  const password = config.redisPassword;
  if (config.redisSentinels && config.redisSentinelMaster) {
    const fromUrl = urlCredentials(config.redisUrl);
    return {
      mode: 'sentinel',
      sentinels: config.redisSentinels,
      masterName: config.redisSentinelMaster,
      sentinelPassword: config.redisSentinelPassword,
      username: username ?? fromUrl.username,
      password: password ?? fromUrl.password,
      tls: config.redisTls || fromUrl.tls,
      db: fromUrl.db,
    };
  }
  if (config.redisClusterNodes) {
    const fromUrl = urlCredentials(config.redisUrl);
    return {
      mode: 'cluster',
      nodes: config.redisClusterNodes,
      username: username ?? fromUrl.username,
      password: password ?? fromUrl.password,
      tls: config.redisTls || fromUrl.tls,
    };
  }
  if (config.redisUrl) return { mode: 'standalone', url: config.redisUrl, username, password };
  return undefined;
}

/**
 * The configured Redis (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES) when set; else a Redis
 * on 127.0.0.1:6379 if one answers; else a local redis-server with AOF and noeviction under the
 * data directory; else a clear message on how to get one.
 */
async function resolveRedis(config: Config, log: (msg: string) => void): Promise<RedisSpec> {
  const configured = configuredRedis(config);
  if (configured) return configured;
  return { mode: 'standalone', url: await localRedisUrl(config, log) };
}

async function localRedisUrl(config: Config, log: (msg: string) => void): Promise<string> {
  if (await portAnswers('127.0.0.1', 6379)) {
    log('REDIS_URL not set; using the Redis answering on 127.0.0.1:6379');
    return 'redis://127.0.0.1:6379';
  }
  const probe = spawnSync('redis-server', ['--version'], { stdio: 'ignore' });
  if (probe.error || probe.status !== 0) {
    process.stderr.write(
      'No Redis found: REDIS_URL is not set, nothing answers on 127.0.0.1:6379 and there is no redis-server binary.\n' +
        'Install Redis 7 (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or set REDIS_URL.\n',
    );
    process.exit(1);
  }
  const port = EMBEDDED_REDIS_PORT;
  if (await portAnswers('127.0.0.1', port)) {
    log(`REDIS_URL not set; using the embedded Redis of a running cycles on 127.0.0.1:${port}`);
    return `redis://127.0.0.1:${port}`;
  }
  const dir = resolve(config.dataDir);
  mkdirSync(dir, { recursive: true });
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'everysec',
      '--maxmemory-policy', 'noeviction', '--daemonize', 'no', '--save', '3600 1 300 100',
      // Compact encoding for small hashes with fields a little over 64 bytes (docker/redis/redis.conf).
      '--hash-max-listpack-value', '128'],
    { stdio: 'ignore' },
  );
  process.once('exit', () => child.kill('SIGTERM'));
  const deadline = Date.now() + EMBEDDED_START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (await portAnswers('127.0.0.1', port)) {
      log(`started an embedded redis-server on 127.0.0.1:${port} (AOF on, data in ${dir})`);
      return `redis://127.0.0.1:${port}`;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  process.stderr.write(`redis-server did not start on port ${port} within ${EMBEDDED_START_TIMEOUT_MS} ms\n`);
  process.exit(1);
}

/** CLI input goes through the same wire schemas as the admin API, so it cannot store bad data. */
function validated<T>(schema: TSchema, value: T, what: string): T {
  const first = Value.Errors(schema, value).First();
  if (first) {
    process.stderr.write(`cycles: invalid ${what}: ${first.path || '/'} ${first.message}\n`);
    process.exit(2);
  }
  return value;
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i === -1 ? undefined : args[i + 1];
}

/** Bound on worker restarts per minute before the primary gives up and exits. */
const MAX_WORKER_RESTARTS_PER_MINUTE = 10;

/**
 * CYCLES_WORKERS > 1: the primary resolves Redis once, forks that many workers that share the
 * listening ports (node:cluster), restarts a worker that dies, and aggregates their metrics for
 * /actuator/prometheus. All state is in Redis, so workers are interchangeable.
 */
async function startPrimary(which: string, config: Config): Promise<void> {
  const logger = createLogger(config.logLevel, { levels: config.logLevels, pretty: config.logPretty });
  const redis = await resolveRedis(config, (m) => logger.info(m));
  const aggregator = new AggregatorRegistry();
  const fork = (index: number) => {
    // Workers inherit the environment; a local Redis the primary found or started is passed on.
    const worker = cluster.fork({ ...(redis.mode === 'standalone' ? { REDIS_URL: redis.url } : {}), CYCLES_WORKER_INDEX: String(index) });
    worker.on('message', (msg: { type?: string; id?: number }) => {
      if (msg?.type !== 'cycles:metrics') return;
      aggregator
        .clusterMetrics()
        .then((text) => worker.send({ type: 'cycles:metrics', id: msg.id, text, contentType: aggregator.contentType }))
        .catch((err: Error) => worker.send({ type: 'cycles:metrics', id: msg.id, error: err.message }));
    });
    return worker;
  };
  const indexOf = new Map<number, number>();
  for (let i = 0; i < config.workers; i += 1) indexOf.set(fork(i).id, i);
  let stopping = false;
  const restarts: number[] = [];
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    const index = indexOf.get(worker.id) ?? 0;
    const now = Date.now();
    restarts.push(now);
    while (restarts.length > 0 && restarts[0]! < now - 60_000) restarts.shift();
    if (restarts.length > MAX_WORKER_RESTARTS_PER_MINUTE) {
      logger.fatal({ code, signal }, 'workers keep dying; giving up');
      process.exit(1);
    }
    logger.warn({ worker: index, code, signal }, 'worker exited; starting a replacement');
    indexOf.set(fork(index).id, index);
  });
  closeWithGrace({ delay: 15_000 }, async ({ signal }) => {
    stopping = true;
    logger.info({ signal, which }, 'stopping workers');
    await Promise.all(
      Object.values(cluster.workers ?? {}).map(
        (w) => new Promise<void>((done) => {
          if (!w || w.isDead()) return done();
          w.once('exit', () => done());
          w.process.kill('SIGTERM');
        }),
      ),
    );
  });
}

/** In a worker, /actuator/prometheus answers with the metrics of all workers, via the primary. */
function clusterMetricsSource(): () => Promise<{ text: string; contentType: string }> {
  let next = 0;
  const pending = new Map<number, (r: { text?: string; contentType?: string; error?: string }) => void>();
  process.on('message', (msg: { type?: string; id?: number; text?: string; contentType?: string; error?: string }) => {
    if (msg?.type !== 'cycles:metrics' || msg.id === undefined) return;
    pending.get(msg.id)?.(msg);
    pending.delete(msg.id);
  });
  return () =>
    new Promise((resolveMetrics, reject) => {
      const id = (next += 1);
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error('metrics aggregation timed out'));
      }, 5000);
      pending.set(id, (r) => {
        clearTimeout(timer);
        if (r.error || r.text === undefined) reject(new Error(r.error ?? 'no metrics'));
        else resolveMetrics({ text: r.text, contentType: r.contentType ?? 'text/plain' });
      });
      process.send?.({ type: 'cycles:metrics', id });
    });
}

/** The ports a command serves, by plane. */
function planePorts(which: string, config: Config): Array<{ plane: string; port: number }> {
  const out: Array<{ plane: string; port: number }> = [];
  if (which === 'all' || which === 'runtime') out.push({ plane: 'runtime', port: config.runtimePort });
  if (which === 'all' || which === 'admin') out.push({ plane: 'admin', port: config.adminPort });
  if (which === 'all' || which === 'events') out.push({ plane: 'events', port: config.eventsPort });
  return out;
}

/**
 * Startup guards (ADR 0018). Until Redis answers, the service ports answer health DOWN (liveness
 * UP) and Redis is retried with backoff, so a service started before its Redis neither crash-loops
 * nor looks healthy. Then the Redis settings are checked: an eviction policy stops the process
 * (exit 1) unless CYCLES_ALLOW_EVICTION=true; AOF off is a warning.
 */
async function waitForCheckedRedis(which: string, config: Config, redis: RedisSpec, logger: ReturnType<typeof createLogger>): Promise<void> {
  const standby: FastifyInstance[] = [];
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  const closeStandby = () => Promise.all(standby.splice(0).map((a) => a.close()));
  try {
    let probe = await waitForRedis(redis, logger, AbortSignal.timeout(STANDBY_AFTER_MS));
    if (!probe) {
      for (const { port } of planePorts(which, config)) {
        const app = buildStandbyApp(logger);
        await app.listen({ host: config.host, port });
        standby.push(app);
      }
      logger.warn('serving health DOWN until Redis is reachable');
      probe = await waitForRedis(redis, logger, stop.signal);
    }
    if (!probe) {
      await closeStandby();
      process.exit(0);
    }
    const verdict = await checkRedisSettings(probe, { allowEviction: config.redisAllowEviction });
    probe.disconnect();
    for (const note of verdict.notes) logger[note.level]({ redisNode: note.node }, note.message);
    if (verdict.refused) {
      logger.fatal(verdict.refused);
      process.stderr.write(`cycles: ${verdict.refused}\n`);
      await closeStandby();
      process.exit(1);
    }
  } finally {
    await closeStandby();
    process.removeListener('SIGTERM', onSignal);
    process.removeListener('SIGINT', onSignal);
  }
}

/** How long the first start attempt may wait for Redis before the ports answer health DOWN. */
const STANDBY_AFTER_MS = 2000;

async function startServices(which: string, config: Config): Promise<void> {
  if (config.workers > 1 && cluster.isPrimary) return startPrimary(which, config);
  const logger = createLogger(config.logLevel, { levels: config.logLevels, pretty: config.logPretty });
  const redis = await resolveRedis(config, (m) => logger.info(m));
  logger.info({ redis: describeRedis(redis) }, 'connecting to Redis');
  if (!config.adminApiKey) logger.warn('ADMIN_API_KEY is not set: admin endpoints will answer 500 until it is configured');
  if (!config.webhookSecretEncryptionKey && (which === 'all' || which === 'admin')) logger.warn('WEBHOOK_SECRET_ENCRYPTION_KEY is not set: webhook signing secrets are encrypted with a key derived from ADMIN_API_KEY (rotating the admin key makes stored secrets unreadable)');
  await waitForCheckedRedis(which, config, redis, logger);
  const system = await createSystem({
    ...config,
    redis,
    logger,
    ...(cluster.isWorker ? { metricsSource: clusterMetricsSource() } : {}),
  });
  if (cluster.isWorker) {
    // Answer the primary's requests for this worker's metrics (prom-client cluster protocol).
    AggregatorRegistry.setRegistries(system.metrics.registry);
    void new AggregatorRegistry();
  }
  const apps: FastifyInstance[] = [];
  const listen = async (app: FastifyInstance, port: number, plane: string) => {
    await app.listen({ host: config.host, port });
    apps.push(app);
    logger.info({ plane, port }, 'listening');
  };
  if (which === 'all' || which === 'runtime') await listen(await system.buildRuntimeApp(), config.runtimePort, 'runtime');
  if (which === 'all' || which === 'admin') await listen(await system.buildAdminApp(), config.adminPort, 'admin');
  if (which === 'all' || which === 'events') {
    await listen(await system.buildEventsApp(), config.eventsPort, 'events');
    // BullMQ workers: relay, deliveries, expiry sweep, reconciliation, retention. Every process
    // may run them; BullMQ hands each job to one worker.
    await system.startEventsService();
  }
  closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
    if (err) logger.error({ err }, 'shutting down after an error');
    else logger.info({ signal }, 'shutting down');
    await Promise.all(apps.map((a) => a.close()));
    await system.close();
  });
}

async function withSystem<T>(config: Config, fn: (system: System) => Promise<T>): Promise<T> {
  const logger = createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel, { levels: config.logLevels, pretty: config.logPretty });
  const redis = await resolveRedis(config, (m) => process.stderr.write(`${m}\n`));
  const system = await createSystem({ ...config, redis, logger });
  try {
    return await fn(system);
  } finally {
    await system.close();
  }
}

const CLI_CORRELATION = { requestId: 'cli', traceId: '0'.repeat(31) + '1' };

async function main(argv: string[]): Promise<void> {
  const [command, sub, ...rest] = argv;
  const config = loadConfig();
  const print = (v: unknown) => process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
  switch (command) {
    case 'all':
    case 'runtime':
    case 'admin':
    case 'events':
      return startServices(command, config);
    case 'tenant':
      if (sub === 'create' && rest[0]) {
        return withSystem(config, async (s) => {
          const body = validated(TenantCreateRequest, { tenant_id: rest[0], name: flag(rest, '--name') ?? rest[0] }, 'tenant');
          const { tenant } = await s.admin.createTenant({ kind: 'admin' }, body, CLI_CORRELATION);
          print(tenant);
        });
      }
      break;
    case 'key':
      if (sub === 'create' && rest[0]) {
        return withSystem(config, async (s) => {
          const perms = flag(rest, '--permissions');
          const key = await s.admin.createApiKey(validated(ApiKeyCreateRequest, {
            tenant_id: rest[0]!,
            name: flag(rest, '--name') ?? 'cli key',
            ...(perms ? { permissions: perms.split(',') } : {}),
          }, 'key'));
          print(key);
          process.stderr.write('The key_secret is shown only once; store it now.\n');
        });
      }
      break;
    case 'budget':
      if (sub === 'create' && rest.length >= 4) {
        const [tenantId, scope, unit, allocated] = rest;
        return withSystem(config, async (s) => {
          const od = flag(rest, '--overdraft-limit');
          const body = validated(BudgetCreateRequest, {
            tenant_id: tenantId,
            scope,
            unit,
            allocated: { unit, amount: Number(allocated) },
            ...(od ? { overdraft_limit: { unit, amount: Number(od) } } : {}),
          } as never, 'budget');
          print(await s.admin.createBudget({ kind: 'admin' }, body, CLI_CORRELATION));
        });
      }
      if (sub === 'fund' && rest.length >= 5) {
        const [tenantId, scope, unit, operation, amount] = rest;
        return withSystem(config, async (s) => {
          const body = validated(BudgetFundingRequest, { operation, amount: { unit, amount: Number(amount) } } as never, 'funding request');
          print(await s.admin.fundBudget({ kind: 'admin' }, { scope: scope!, unit: unit!, tenant_id: tenantId }, body, CLI_CORRELATION));
        });
      }
      break;
    default:
      break;
  }
  process.stderr.write(`${USAGE}\n`);
  process.exit(command === undefined || command === 'help' || command === '--help' ? 0 : 2);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  process.stderr.write(`cycles: ${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}\n`);
  process.exit(1);
});
