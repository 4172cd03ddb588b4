import { LOG_COMPONENTS, LOG_LEVELS, type ComponentLevels, type LogComponent, type LogLevel } from './observability/logger.js';

/**
 * The one place that reads process.env. Every setting has a documented default (see
 * docs/configuration.md) and is validated at start, so a typo fails loudly instead of silently
 * running with a default.
 */
export interface Config {
  redisUrl: string | undefined;
  /** Redis topology and credentials (ADR 0018): Sentinel when redisSentinels, Cluster when redisClusterNodes. */
  redisSentinels: Array<{ host: string; port: number }> | undefined;
  redisSentinelMaster: string | undefined;
  redisSentinelPassword: string | undefined;
  redisClusterNodes: Array<{ host: string; port: number }> | undefined;
  redisUsername: string | undefined;
  redisPassword: string | undefined;
  redisTls: boolean;
  /** Start even when Redis may evict keys (maxmemory-policy other than noeviction); logged at error level. */
  redisAllowEviction: boolean;
  /** Replicas that must acknowledge each script's writes (WAIT) before a request succeeds; 0 = off. */
  redisWaitReplicas: number;
  redisWaitTimeoutMs: number;
  adminApiKey: string | undefined;
  host: string;
  runtimePort: number;
  adminPort: number;
  eventsPort: number;
  keyPrefix: string;
  expiryIntervalMs: number;
  expiryBatchSize: number;
  reservationRetentionMs: number;
  bodyLimitBytes: number;
  authCacheTtlMs: number;
  logLevel: string;
  /** Per-component levels (LOG_LEVELS, e.g. `runtime=debug,workers=warn`); others log at logLevel. */
  logLevels: ComponentLevels;
  /** Human-readable log lines (pino-pretty, a dev dependency); JSON lines otherwise. */
  logPretty: boolean;
  dataDir: string;
  workers: number;
  /** AES-256-GCM key for webhook signing secrets at rest (base64 of 32 bytes); unset = derived from ADMIN_API_KEY. */
  webhookSecretEncryptionKey: string | undefined;
  /** Events service (events digest §7): retention of stored events and delivery records. */
  eventTtlMs: number;
  deliveryTtlMs: number;
  /** A delivery older than this (from its creation) fails without another attempt. */
  maxDeliveryAgeMs: number;
  webhookConnectTimeoutMs: number;
  webhookTimeoutMs: number;
  /** Webhook deliveries in flight per events process. */
  deliveryConcurrency: number;
  reconcileIntervalMs: number;
  retentionIntervalMs: number;
  /** BullMQ job lock; a killed worker's job is handed to another worker after about this long. */
  jobLockMs: number;
  /** Audit rows: retention, retention of rows of unauthenticated requests, and the share of those kept. */
  auditRetentionMs: number;
  auditUnauthRetentionMs: number;
  auditUnauthSampleRate: number;
  /** Label webhook metrics with the tenant id (off where scrape paths are shared). */
  metricsTenantTag: boolean;
  /** Serve the OpenAPI document (/openapi.json) and Swagger UI (/docs) on the runtime and admin ports. */
  swaggerEnabled: boolean;
  /** Development only: serve /docs and /openapi.json without the admin key. */
  docsPublic: boolean;
  /** Origins the operator dashboard may call the admin plane from (CORS); ['*'] allows any. */
  dashboardCorsOrigins: string[];
  /** Failed authentications per client IP per minute before the admin plane answers 429; 0 = off. */
  authFailureLimit: number;
  /** Runtime requests per second per tenant (all its keys), shared through Redis; 0 = off (ADR 0017). */
  rateLimitTenantPerSecond: number;
  /** Runtime requests per second per API key; 0 = off. */
  rateLimitKeyPerSecond: number;
  /** Bucket capacity in seconds of the rate: a bucket holds rate × burst requests. */
  rateLimitBurst: number;
}

type Env = Record<string, string | undefined>;

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new Error(`${name} must be an integer in [${min}, ${max}], got '${raw}'`);
  }
  return n;
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = raw.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(v)) return true;
  if (['false', '0', 'no', 'off'].includes(v)) return false;
  throw new Error(`${name} must be true or false, got '${raw}'`);
}

/**
 * A comma-separated list of browser origins (scheme://host[:port], exactly as a browser sends
 * them in Origin), or `*`. A path or trailing slash would never match, so it is refused.
 */
function origins(env: Env, name: string, fallback: string): string[] {
  const list = str(env, name, fallback).split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (list.length === 0) throw new Error(`${name} must name at least one origin or '*'`);
  if (list.includes('*')) return ['*'];
  for (const origin of list) {
    let parsed: URL | undefined;
    try {
      parsed = new URL(origin);
    } catch {
      parsed = undefined;
    }
    if (!parsed || !/^https?:$/.test(parsed.protocol) || parsed.origin !== origin) {
      throw new Error(`${name} entries must be origins like https://dashboard.example.com (no path, no trailing slash) or '*'; got '${origin}'`);
    }
  }
  return list;
}

function fraction(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new Error(`${name} must be a number in [0, 1], got '${raw}'`);
  return n;
}

/** A comma-separated `host:port` list (IPv6 hosts in brackets: `[::1]:26379`). */
function hostPorts(env: Env, name: string): Array<{ host: string; port: number }> | undefined {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  return raw.split(',').map((s) => s.trim()).filter((s) => s !== '').map((entry) => {
    const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(entry);
    const port = m ? Number(m[3]) : NaN;
    if (!m || port < 1 || port > 65535) throw new Error(`${name} must be a comma-separated list of host:port, got '${entry}'`);
    return { host: (m[1] ?? m[2])!, port };
  });
}

/** `component=level` pairs, comma-separated; unknown components and levels are refused. */
function componentLevels(env: Env, name: string): ComponentLevels {
  const raw = env[name];
  const out: ComponentLevels = {};
  if (raw === undefined || raw.trim() === '') return out;
  for (const entry of raw.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
    const [component, level, extra] = entry.split('=').map((s) => s.trim());
    if (extra !== undefined || !LOG_COMPONENTS.includes(component as LogComponent) || !LOG_LEVELS.includes(level as LogLevel)) {
      throw new Error(`${name} must be a comma-separated list of component=level (components: ${LOG_COMPONENTS.join(', ')}; levels: ${LOG_LEVELS.join(', ')}); got '${entry}'`);
    }
    out[component as LogComponent] = level as LogLevel;
  }
  return out;
}

function str(env: Env, name: string, fallback: string): string {
  const raw = env[name];
  return raw === undefined || raw === '' ? fallback : raw;
}

const DAY_MS = 86_400_000;

export function loadConfig(env: Env = process.env): Config {
  const logLevel = str(env, 'LOG_LEVEL', 'info');
  if (!LOG_LEVELS.includes(logLevel as LogLevel)) {
    throw new Error(`LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent; got '${logLevel}'`);
  }
  const keyPrefix = str(env, 'CYCLES_KEY_PREFIX', 'cycles');
  const webhookKey = env.WEBHOOK_SECRET_ENCRYPTION_KEY || undefined;
  if (webhookKey !== undefined && Buffer.from(webhookKey, 'base64').length !== 32) {
    throw new Error('WEBHOOK_SECRET_ENCRYPTION_KEY must be the base64 encoding of 32 bytes (e.g. `openssl rand -base64 32`)');
  }
  if (!/^[A-Za-z0-9_.-]{1,32}$/.test(keyPrefix)) throw new Error('CYCLES_KEY_PREFIX must match [A-Za-z0-9_.-]{1,32}');
  const redisSentinels = hostPorts(env, 'REDIS_SENTINELS');
  const redisClusterNodes = hostPorts(env, 'REDIS_CLUSTER_NODES');
  const redisSentinelMaster = env.REDIS_SENTINEL_MASTER || undefined;
  if (redisSentinels && redisClusterNodes) throw new Error('set REDIS_SENTINELS or REDIS_CLUSTER_NODES, not both');
  if (redisSentinels && !redisSentinelMaster) throw new Error('REDIS_SENTINELS needs REDIS_SENTINEL_MASTER (the master name the sentinels monitor)');
  if (redisSentinelMaster && !redisSentinels) throw new Error('REDIS_SENTINEL_MASTER needs REDIS_SENTINELS (host:port of the sentinels)');
  return {
    redisUrl: env.REDIS_URL || undefined,
    redisSentinels,
    redisSentinelMaster,
    redisSentinelPassword: env.REDIS_SENTINEL_PASSWORD || undefined,
    redisClusterNodes,
    redisUsername: env.REDIS_USERNAME || undefined,
    redisPassword: env.REDIS_PASSWORD || undefined,
    redisTls: bool(env, 'REDIS_TLS', false),
    redisAllowEviction: bool(env, 'CYCLES_ALLOW_EVICTION', false),
    redisWaitReplicas: int(env, 'CYCLES_REDIS_WAIT_REPLICAS', 0, 0, 16),
    redisWaitTimeoutMs: int(env, 'CYCLES_REDIS_WAIT_TIMEOUT_MS', 1000, 10, 60_000),
    adminApiKey: env.ADMIN_API_KEY || undefined,
    host: str(env, 'CYCLES_HOST', '0.0.0.0'),
    runtimePort: int(env, 'CYCLES_RUNTIME_PORT', 7878, 0, 65535),
    adminPort: int(env, 'CYCLES_ADMIN_PORT', 7979, 0, 65535),
    eventsPort: int(env, 'CYCLES_EVENTS_PORT', 7980, 0, 65535),
    keyPrefix,
    expiryIntervalMs: int(env, 'CYCLES_EXPIRY_INTERVAL_MS', 5000, 100, 3_600_000),
    expiryBatchSize: int(env, 'CYCLES_EXPIRY_BATCH_SIZE', 50, 1, 10_000),
    reservationRetentionMs: int(env, 'CYCLES_RESERVATION_RETENTION_MS', 30 * DAY_MS, 60_000, 3650 * DAY_MS),
    bodyLimitBytes: int(env, 'CYCLES_BODY_LIMIT_BYTES', 65_536, 1024, 10_485_760),
    authCacheTtlMs: int(env, 'CYCLES_AUTH_CACHE_TTL_MS', 1000, 0, 60_000),
    logLevel,
    logLevels: componentLevels(env, 'LOG_LEVELS'),
    logPretty: bool(env, 'LOG_PRETTY', false),
    dataDir: str(env, 'CYCLES_DATA_DIR', '.cycles'),
    workers: int(env, 'CYCLES_WORKERS', 1, 1, 64),
    webhookSecretEncryptionKey: webhookKey,
    eventTtlMs: int(env, 'EVENT_TTL_DAYS', 90, 1, 3650) * DAY_MS,
    deliveryTtlMs: int(env, 'DELIVERY_TTL_DAYS', 14, 1, 3650) * DAY_MS,
    maxDeliveryAgeMs: int(env, 'MAX_DELIVERY_AGE_MS', 86_400_000, 1000, 30 * DAY_MS),
    webhookConnectTimeoutMs: int(env, 'DISPATCH_HTTP_CONNECT_TIMEOUT_SECONDS', 5, 1, 300) * 1000,
    webhookTimeoutMs: int(env, 'DISPATCH_HTTP_TIMEOUT_SECONDS', 30, 1, 600) * 1000,
    deliveryConcurrency: int(env, 'CYCLES_DELIVERY_CONCURRENCY', 32, 1, 1000),
    reconcileIntervalMs: int(env, 'CYCLES_RECONCILE_INTERVAL_MS', 30_000, 1000, DAY_MS),
    retentionIntervalMs: int(env, 'RETENTION_CLEANUP_INTERVAL_MS', 3_600_000, 1000, DAY_MS),
    jobLockMs: int(env, 'CYCLES_JOB_LOCK_MS', 30_000, 1000, 600_000),
    auditRetentionMs: int(env, 'AUDIT_RETENTION_DAYS', 400, 1, 3650) * DAY_MS,
    auditUnauthRetentionMs: int(env, 'AUDIT_UNAUTH_RETENTION_DAYS', 30, 1, 3650) * DAY_MS,
    auditUnauthSampleRate: fraction(env, 'AUDIT_SAMPLE_UNAUTHENTICATED', 1),
    metricsTenantTag: bool(env, 'CYCLES_METRICS_TENANT_TAG_ENABLED', true),
    swaggerEnabled: bool(env, 'SWAGGER_ENABLED', true),
    docsPublic: bool(env, 'CYCLES_DOCS_PUBLIC', false),
    dashboardCorsOrigins: origins(env, 'DASHBOARD_CORS_ORIGIN', 'http://localhost:5173'),
    authFailureLimit: int(env, 'CYCLES_AUTH_FAILURE_LIMIT', 0, 0, 1_000_000),
    rateLimitTenantPerSecond: int(env, 'CYCLES_RATE_LIMIT_TENANT_PER_SECOND', 0, 0, 1_000_000),
    rateLimitKeyPerSecond: int(env, 'CYCLES_RATE_LIMIT_KEY_PER_SECOND', 0, 0, 1_000_000),
    rateLimitBurst: int(env, 'CYCLES_RATE_LIMIT_BURST', 1, 1, 3600),
  };
}
