import { randomBytes } from 'node:crypto';
import { deriveSecretKey } from './domain/webhooks.js';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { buildAdminApp } from './api/admin-app.js';
import { createBaseApp } from './api/base.js';
import { healthRoutes } from './api/routes/health.js';
import { buildRuntimeApp } from './api/runtime-app.js';
import { AdminService } from './domain/admin.js';
import { AuditLog } from './domain/audit.js';
import { Authenticator } from './domain/authenticator.js';
import { ListingService } from './domain/listing.js';
import { RuntimeService } from './domain/runtime.js';
import { Metrics } from './observability/metrics.js';
import { AdminStore } from './store/admin-store.js';
import { Keys } from './store/keys.js';
import { createRedis } from './store/redis.js';
import { RuntimeStore } from './store/runtime-store.js';
import { registerScripts } from './store/scripts.js';
import { ExpirySweep } from './workers/expiry-sweep.js';
import type { Redis } from 'ioredis';

export interface SystemOptions {
  redisUrl: string;
  adminApiKey: string | undefined;
  keyPrefix: string;
  logger: Logger;
  bodyLimitBytes: number;
  authCacheTtlMs: number;
  reservationRetentionMs: number;
  expiryIntervalMs: number;
  expiryBatchSize: number;
  /** Base64 of the 32-byte webhook secret key; unset = HKDF of the admin key (ADR 0013). */
  webhookSecretEncryptionKey?: string | undefined;
  /** Where /actuator/prometheus gets its text; defaults to this process's registry. */
  metricsSource?: () => Promise<{ text: string; contentType: string }>;
}

/** Everything one process needs, wired once: stores, services, apps, the sweep. */
export interface System {
  redis: Redis;
  subscriber: Redis;
  keys: Keys;
  metrics: Metrics;
  runtimeStore: RuntimeStore;
  adminStore: AdminStore;
  admin: AdminService;
  runtime: RuntimeService;
  authenticator: Authenticator;
  sweep: ExpirySweep;
  buildRuntimeApp(): Promise<FastifyInstance>;
  buildAdminApp(): Promise<FastifyInstance>;
  buildEventsApp(): Promise<FastifyInstance>;
  close(): Promise<void>;
}

/** Script replies start with a kind: success kinds, a replay, a refusal (an error code), or a count. */
const SUCCESS_KINDS = new Set(['OK', 'CREATED', 'EXISTS']);
function scriptOutcomeLabel(first: string): string {
  if (SUCCESS_KINDS.has(first) || /^\d+$/.test(first)) return 'ok';
  if (first === 'REPLAY') return 'replay';
  if (first === 'redis_error') return 'redis_error';
  return 'refused';
}

/** Bound on a health probe's PING, so a hung Redis reports DOWN instead of hanging the probe. */
const PING_TIMEOUT_MS = 1000;

/**
 * The key that encrypts webhook signing secrets at rest. Without WEBHOOK_SECRET_ENCRYPTION_KEY it
 * is derived from the admin key (so every process of a deployment agrees; the CLI warns); with
 * neither, a per-process random key (the admin plane cannot be used without the admin key anyway).
 */
function webhookKey(opts: SystemOptions): Buffer {
  if (opts.webhookSecretEncryptionKey) return Buffer.from(opts.webhookSecretEncryptionKey, 'base64');
  if (opts.adminApiKey) return deriveSecretKey(opts.adminApiKey);
  return randomBytes(32);
}

export async function createSystem(opts: SystemOptions): Promise<System> {
  const redis = createRedis(opts.redisUrl, 'cycles', opts.logger);
  const subscriber = createRedis(opts.redisUrl, 'cycles-sub', opts.logger);
  const keys = new Keys(opts.keyPrefix);
  const metrics = new Metrics();
  const scripts = registerScripts(redis, (script, seconds, result) => {
    metrics.scriptDuration.observe({ script, result: scriptOutcomeLabel(result) }, seconds);
  });
  const runtimeStore = new RuntimeStore(redis, scripts, keys, opts.reservationRetentionMs);
  const adminStore = new AdminStore(redis, scripts, keys);
  const authenticator = new Authenticator(adminStore, opts.adminApiKey, opts.authCacheTtlMs);
  await subscriber.subscribe(keys.authInvalidationChannel());
  subscriber.on('message', (_channel: string, keyId: string) => authenticator.invalidate(keyId));
  // After a reconnect, invalidations may have been missed: start from an empty cache.
  subscriber.on('ready', () => authenticator.invalidate('*'));

  const webhookSecretKey = webhookKey(opts);
  const audit = new AuditLog(adminStore, undefined, (err) => opts.logger.warn({ err }, 'audit write failed'));
  const runtime = new RuntimeService(runtimeStore, { decision: (operation, decision) => metrics.decisions.inc({ operation, decision }) });
  const listing = new ListingService(runtimeStore);
  const admin = new AdminService(adminStore);
  const sweep = new ExpirySweep({
    runtimeStore,
    adminStore,
    intervalMs: opts.expiryIntervalMs,
    batchSize: opts.expiryBatchSize,
    logger: opts.logger,
    onExpired: (n) => metrics.expired.inc(n),
  });
  const metricsSource =
    opts.metricsSource ?? (async () => ({ text: await metrics.registry.metrics(), contentType: metrics.registry.contentType }));
  const pingRedis = async (): Promise<boolean> => {
    try {
      const pong = await Promise.race([
        redis.ping(),
        new Promise<string>((resolve) => setTimeout(() => resolve('timeout'), PING_TIMEOUT_MS).unref()),
      ]);
      return pong === 'PONG';
    } catch {
      return false;
    }
  };

  return {
    redis,
    subscriber,
    keys,
    metrics,
    runtimeStore,
    adminStore,
    admin,
    runtime,
    authenticator,
    sweep,
    buildRuntimeApp: () =>
      buildRuntimeApp({ logger: opts.logger, bodyLimitBytes: opts.bodyLimitBytes, metrics, metricsSource, authenticator, runtime, listing, audit, pingRedis }),
    buildAdminApp: () =>
      buildAdminApp({
        logger: opts.logger,
        bodyLimitBytes: opts.bodyLimitBytes,
        metrics,
        metricsSource,
        authenticator,
        admin,
        audit,
        stores: { admin: adminStore, runtime: runtimeStore },
        pingRedis,
        webhookSecretKey,
      }),
    buildEventsApp: async () => {
      const app = createBaseApp({ plane: 'events', logger: opts.logger, bodyLimitBytes: opts.bodyLimitBytes, metrics });
      await app.register(async (scope) => healthRoutes(scope, { pingRedis, metricsSource }));
      return app;
    },
    async close() {
      await sweep.stop();
      subscriber.disconnect();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
