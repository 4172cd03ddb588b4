import { randomBytes } from 'node:crypto';
import { deriveSecretKey, SecretCipher } from './domain/webhooks.js';
import type { Queue } from 'bullmq';
import { EventsMetrics } from './observability/events-metrics.js';
import { PipelineStore } from './store/pipeline-store.js';
import { EventsService } from './workers/events-service.js';
import { bullConnection, closeConnection, createQueues, enqueueReplay, type Queues } from './workers/queues.js';
import { WebhookOps } from './domain/webhook-ops.js';
import { lookup } from 'node:dns/promises';
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
import { bindRequestLogContext, componentLogger, type LogComponent } from './observability/logger.js';
import { AdminStore } from './store/admin-store.js';
import { AuthFailureStore } from './store/auth-failures.js';
import { Keys } from './store/keys.js';
import { createRedis, pingRedis as pingNodes, type RedisClient, type RedisSpec } from './store/redis.js';
import { RuntimeStore } from './store/runtime-store.js';
import { RateLimitStore } from './store/rate-limit-store.js';
import { registerScripts } from './store/scripts.js';
import { ExpirySweep } from './workers/expiry-sweep.js';
import { migrateReservationLayout } from './workers/layout-migration.js';

export interface SystemOptions {
  /** Where Redis is: a spec (standalone URL, Sentinel or Cluster; ADR 0018), or a plain URL. */
  redis?: RedisSpec | undefined;
  /** A standalone URL; used when `redis` is absent. */
  redisUrl?: string | undefined;
  /** WAIT for this many replicas after each script (CYCLES_REDIS_WAIT_REPLICAS); 0 = off. */
  redisWaitReplicas?: number;
  redisWaitTimeoutMs?: number;
  adminApiKey: string | undefined;
  keyPrefix: string;
  logger: Logger;
  bodyLimitBytes: number;
  authCacheTtlMs: number;
  reservationRetentionMs: number;
  /**
   * Internal: the shortest time a live reserve's record is kept after its creation, so that a
   * retried reserve replays (24 h, as the idempotency records before ADR 0019). Tests shorten it.
   */
  reserveReplayWindowMs?: number;
  expiryIntervalMs: number;
  expiryBatchSize: number;
  /** Base64 of the 32-byte webhook secret key; unset = HKDF of the admin key (ADR 0013). */
  webhookSecretEncryptionKey?: string | undefined;
  /** Events service settings (config.ts); defaults as documented in docs/configuration.md. */
  eventTtlMs?: number;
  deliveryTtlMs?: number;
  maxDeliveryAgeMs?: number;
  webhookConnectTimeoutMs?: number;
  webhookTimeoutMs?: number;
  deliveryConcurrency?: number;
  reconcileIntervalMs?: number;
  retentionIntervalMs?: number;
  jobLockMs?: number;
  auditRetentionMs?: number;
  auditUnauthRetentionMs?: number;
  auditUnauthSampleRate?: number;
  metricsTenantTag?: boolean;
  /** API docs, dashboard CORS and auth-failure throttle (config.ts; ADR 0016); absent = documented default. */
  swaggerEnabled?: boolean;
  docsPublic?: boolean;
  dashboardCorsOrigins?: string[];
  authFailureLimit?: number;
  /** Runtime rate limits (config.ts; ADR 0017); absent = 0 (off), burst 1. */
  rateLimitTenantPerSecond?: number;
  rateLimitKeyPerSecond?: number;
  rateLimitBurst?: number;
  /** Where /actuator/prometheus gets its text; defaults to this process's registry. */
  metricsSource?: () => Promise<{ text: string; contentType: string }>;
}

/** Everything one process needs, wired once: stores, services, apps, the sweep. */
export interface System {
  redis: RedisClient;
  subscriber: RedisClient;
  keys: Keys;
  metrics: Metrics;
  runtimeStore: RuntimeStore;
  adminStore: AdminStore;
  admin: AdminService;
  runtime: RuntimeService;
  authenticator: Authenticator;
  sweep: ExpirySweep;
  pipelineStore: PipelineStore;
  cipher: SecretCipher;
  /** Starts the BullMQ workers and schedulers of the events service in this process. */
  startEventsService(): Promise<EventsService>;
  /** Producer-side queues (the admin plane enqueues replays and reads queue counts). */
  queues(): Queues;
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

/** A close cascade still pending this long after it started is resumed by reconciliation. */
const CASCADE_RESUME_AFTER_MS = 60_000;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

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

/** The connection spec of a system: `redis` when given, else the standalone `redisUrl`. */
function specOf(opts: SystemOptions): RedisSpec {
  if (opts.redis) return opts.redis;
  if (opts.redisUrl) return { mode: 'standalone', url: opts.redisUrl };
  throw new Error('createSystem needs a Redis spec (redis) or a URL (redisUrl)');
}

export async function createSystem(opts: SystemOptions): Promise<System> {
  const spec = specOf(opts);
  // Each component logs through its own child logger, at its LOG_LEVELS level if one is set.
  const log = (component: LogComponent) => componentLogger(opts.logger, component);
  const redis = createRedis(spec, 'cycles', log('redis'));
  const subscriber = createRedis(spec, 'cycles-sub', log('redis'));
  const keys = new Keys(opts.keyPrefix);
  const metrics = new Metrics();
  const scripts = registerScripts(redis, (script, seconds, result) => {
    metrics.scriptDuration.observe({ script, result: scriptOutcomeLabel(result) }, seconds);
  }, { waitReplicas: opts.redisWaitReplicas ?? 0, waitTimeoutMs: opts.redisWaitTimeoutMs ?? 1000 });
  const runtimeStore = new RuntimeStore(redis, scripts, keys, opts.reservationRetentionMs, opts.reserveReplayWindowMs);
  const adminStore = new AdminStore(redis, scripts, keys);
  const authenticator = new Authenticator(adminStore, opts.adminApiKey, opts.authCacheTtlMs);
  const docs = { enabled: opts.swaggerEnabled ?? true, public: opts.docsPublic ?? false };
  const authThrottle = { limit: opts.authFailureLimit ?? 0, counter: new AuthFailureStore(redis, keys) };
  const rateLimit = {
    tenantPerSecond: opts.rateLimitTenantPerSecond ?? 0,
    keyPerSecond: opts.rateLimitKeyPerSecond ?? 0,
    burst: opts.rateLimitBurst ?? 1,
    limiter: new RateLimitStore(scripts, keys),
    onLimited: (scope: 'tenant' | 'key') => metrics.rateLimited.inc({ scope }),
  };
  // Reservations stored before ADR 0019 move to the record layout before anything is served.
  await migrateReservationLayout(runtimeStore, adminStore, log('redis'));
  await subscriber.subscribe(keys.authInvalidationChannel());
  subscriber.on('message', (_channel: string, keyId: string) => authenticator.invalidate(keyId));
  // After a reconnect, invalidations may have been missed: start from an empty cache.
  subscriber.on('ready', () => authenticator.invalidate('*'));

  const webhookSecretKey = webhookKey(opts);
  const audit = new AuditLog(adminStore, opts.auditRetentionMs, (err) => log('audit').warn({ err }, 'audit write failed'), {
    retentionMs: opts.auditUnauthRetentionMs ?? 30 * 86_400_000,
    sampleRate: opts.auditUnauthSampleRate ?? 1,
  });
  const runtime = new RuntimeService(runtimeStore, { decision: (operation, decision) => metrics.decisions.inc({ operation, decision }) });
  const listing = new ListingService(runtimeStore);
  const admin = new AdminService(adminStore);
  const sweep = new ExpirySweep({
    runtimeStore,
    adminStore,
    intervalMs: opts.expiryIntervalMs,
    batchSize: opts.expiryBatchSize,
    logger: log('expiry'),
    onExpired: (n) => metrics.expired.inc(n),
    onPurged: (n, lagSeconds) => {
      if (n > 0) metrics.purged.inc(n);
      metrics.purgeLag.set(lagSeconds);
    },
  });
  const pipelineStore = new PipelineStore(redis, scripts, keys);
  const cipher = new SecretCipher(webhookSecretKey);
  let eventsService: EventsService | undefined;
  let producer: { connection: RedisClient; queues: Queues } | undefined;
  const queues = (): Queues => {
    if (eventsService) return eventsService.queues;
    if (!producer) {
      const connection = bullConnection(spec, 'cycles-queue-producer');
      producer = { connection, queues: createQueues(connection, opts.keyPrefix) };
    }
    return producer.queues;
  };
  const startEventsService = async (): Promise<EventsService> => {
    if (eventsService) return eventsService;
    const service: EventsService = new EventsService({
      redis: spec,
      keyPrefix: opts.keyPrefix,
      logger: log('workers'),
      store: pipelineStore,
      scripts,
      cipher,
      sweep,
      metrics: new EventsMetrics(metrics.registry, () => service.queueCounts(), opts.metricsTenantTag ?? true),
      eventTtlMs: opts.eventTtlMs ?? 90 * 86_400_000,
      deliveryTtlMs: opts.deliveryTtlMs ?? 14 * 86_400_000,
      maxDeliveryAgeMs: opts.maxDeliveryAgeMs ?? 86_400_000,
      connectTimeoutMs: opts.webhookConnectTimeoutMs ?? 5000,
      timeoutMs: opts.webhookTimeoutMs ?? 30_000,
      expiryIntervalMs: opts.expiryIntervalMs,
      reconcileIntervalMs: opts.reconcileIntervalMs ?? 30_000,
      retentionIntervalMs: opts.retentionIntervalMs ?? 3_600_000,
      deliveryConcurrency: opts.deliveryConcurrency ?? 32,
      lockDurationMs: opts.jobLockMs ?? 30_000,
      audit: { retentionMs: audit.retentionMs, unauthRetentionMs: audit.unauth.retentionMs },
      migrateLayout: async () => (await migrateReservationLayout(runtimeStore, adminStore, log('redis'))).moved,
      finishCascades: async () => {
        // Cascades still pending a minute after they started were interrupted: finish them.
        const stale = await redis.zrangebyscore(keys.cascadePending(), '-inf', Date.now() - CASCADE_RESUME_AFTER_MS, 'LIMIT', 0, 100);
        let finished = 0;
        for (const tenantId of stale) {
          const report = await admin.runCloseCascade({ kind: 'admin' }, tenantId, { requestId: 'reconcile', traceId: randomBytes(16).toString('hex') });
          if (report.complete) finished++;
          opts.logger.warn({ tenant: tenantId, complete: report.complete, changes: report.changes.length }, 'reconciliation resumed an interrupted tenant close cascade');
        }
        return finished;
      },
    });
    eventsService = service;
    await service.start();
    return service;
  };
  const webhookOps = new WebhookOps({
    store: pipelineStore,
    cipher,
    resolve: async (hostname) => (await lookup(hostname, { all: true, verbatim: true })).map((a) => a.address),
    deliveryTtlMs: opts.deliveryTtlMs ?? 14 * 86_400_000,
    enqueueReplay: (owner, subscriptionId, deliveryIds) =>
      enqueueReplay(queues().deliveries, { owner, subscriptionId, deliveryIds }, `replay_${deliveryIds[0]}`),
  });
  const metricsSource =
    opts.metricsSource ?? (async () => ({ text: await metrics.registry.metrics(), contentType: metrics.registry.contentType }));
  // On Cluster every master must answer: a master that does not serves none of its tenants.
  const pingRedis = (): Promise<boolean> => pingNodes(redis, PING_TIMEOUT_MS);

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
    pipelineStore,
    cipher,
    startEventsService,
    queues,
    buildRuntimeApp: async () =>
      bindRequestLogContext(await buildRuntimeApp({ logger: log('runtime'), bodyLimitBytes: opts.bodyLimitBytes, metrics, metricsSource, authenticator, runtime, listing, audit, pingRedis, docs, rateLimit })),
    buildAdminApp: async () =>
      bindRequestLogContext(await buildAdminApp({
        logger: log('admin'),
        bodyLimitBytes: opts.bodyLimitBytes,
        metrics,
        metricsSource,
        authenticator,
        admin,
        audit,
        stores: { admin: adminStore, runtime: runtimeStore },
        pingRedis,
        webhookSecretKey,
        webhookOps,
        queues: () => Object.values(queues()),
        edge: { docs, authThrottle, ...(opts.dashboardCorsOrigins ? { corsOrigins: opts.dashboardCorsOrigins } : {}) },
      })),
    buildEventsApp: async () => {
      const app = bindRequestLogContext(createBaseApp({ plane: 'events', logger: log('events'), bodyLimitBytes: opts.bodyLimitBytes, metrics }));
      await app.register(async (scope) => healthRoutes(scope, { pingRedis, metricsSource }));
      return app;
    },
    async close() {
      await sweep.stop();
      await eventsService?.stop();
      if (producer) {
        // Let the queues' start-up commands finish before closing: QUIT waits for pending replies,
        // where a plain disconnect would reject them with nobody listening.
        // A queue created moments ago may still be running its start-up commands (version check,
        // meta write): let them finish (bounded) so closing does not reject them unobserved.
        await Promise.all(Object.values(producer.queues).map((q: Queue) =>
          Promise.race([q.waitUntilReady().catch(() => undefined), new Promise((r) => setTimeout(r, 2000).unref())])));
        await sleep(0);
        await Promise.all(Object.values(producer.queues).map((q: Queue) => q.close().catch(() => undefined)));
        await closeConnection(producer.connection);
      }
      subscriber.disconnect();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
