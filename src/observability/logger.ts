import { AsyncLocalStorage } from 'node:async_hooks';
import { createRequire } from 'node:module';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { pino, type DestinationStream, type Logger } from 'pino';

/** pino levels accepted by LOG_LEVEL and LOG_LEVELS. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * Components whose level LOG_LEVELS can set apart from LOG_LEVEL (docs/configuration.md):
 * the three HTTP planes, the Redis connections, the expiry sweep, the events workers (relay,
 * deliveries, reconciliation, retention) and audit writes. Everything else logs at LOG_LEVEL.
 */
export const LOG_COMPONENTS = ['runtime', 'admin', 'events', 'redis', 'expiry', 'workers', 'audit'] as const;
export type LogComponent = (typeof LOG_COMPONENTS)[number];
export type ComponentLevels = Partial<Record<LogComponent, LogLevel>>;

/**
 * Secrets never reach a log line: API keys and admin keys in request headers, Authorization and
 * cookies, key and signing secrets in bodies, Redis passwords and URLs in configuration objects.
 * (pino paths are exact; `*` stands for one level.)
 */
export const REDACT_PATHS = [
  ...['req.headers', 'headers', 'request.headers'].flatMap((h) =>
    ['x-cycles-api-key', 'x-admin-api-key', 'authorization', 'cookie', 'proxy-authorization'].map((name) => `${h}["${name}"]`)),
  ...['key_secret', 'signing_secret', 'secret', 'password', 'adminApiKey', 'redisUrl', 'redisPassword', 'sentinelPassword',
    'redisSentinelPassword', 'webhookSecretEncryptionKey'].flatMap((field) => [field, `*.${field}`]),
  '*.*.key_secret',
  '*.*.signing_secret',
  '*.*.password',
  // A Redis connection spec's URL may carry a password.
  'redis.url',
  '*.redis.url',
];

/** URLs keep their host (useful when debugging a connection) with the password masked; anything else is replaced. */
function censor(value: unknown, path: string[]): string {
  const field = path[path.length - 1];
  if ((field === 'url' || field === 'redisUrl') && typeof value === 'string') {
    try {
      const u = new URL(value);
      if (u.password) u.password = '***';
      return u.toString();
    } catch {
      return '[redacted]';
    }
  }
  return '[redacted]';
}

const LEVELS = Symbol.for('cycles.logLevels');
const requestContext = new AsyncLocalStorage<FastifyRequest>();

export interface LoggerOptions {
  /** Per-component levels (LOG_LEVELS); a component not named logs at `level`. */
  levels?: ComponentLevels;
  /** Where lines go; stdout when absent (tests pass a stream to read them). */
  destination?: DestinationStream;
  /** Human-readable lines through pino-pretty (LOG_PRETTY; development only, a dev dependency). */
  pretty?: boolean;
  name?: string;
}

/** The tenant a request is about: its API key's tenant, else an admin request's tenant_id. */
function requestTenant(request: FastifyRequest): string | undefined {
  const auth = request.cycles?.auth;
  if (auth?.kind === 'tenant') return auth.tenantId;
  const query = request.query as Record<string, unknown> | undefined;
  const body = request.body as Record<string, unknown> | undefined;
  for (const v of [query?.tenant_id, query?.tenant, body && typeof body === 'object' ? body.tenant_id : undefined]) {
    if (typeof v === 'string' && v !== '') return v;
  }
  return undefined;
}

/** Correlation of the request being served, merged into every line logged while serving it. */
function requestFields(): Record<string, unknown> {
  const request = requestContext.getStore();
  if (!request) return {};
  const out: Record<string, unknown> = { requestId: request.cycles?.requestId ?? String(request.id) };
  if (request.cycles?.traceId) out.traceId = request.cycles.traceId;
  const tenant = requestTenant(request);
  if (tenant) out.tenant = tenant;
  out.operation = request.routeOptions?.config?.operation ?? 'unmatched';
  return out;
}

/**
 * pino JSON lines. Lines logged while a request is served (see bindRequestLogContext) carry its
 * requestId, traceId, tenant and operation; secrets are redacted (REDACT_PATHS).
 */
export function createLogger(level: string, opts: LoggerOptions | string = {}): Logger {
  const o: LoggerOptions = typeof opts === 'string' ? { name: opts } : opts;
  const options = {
    name: o.name ?? 'cycles',
    level,
    redact: { paths: REDACT_PATHS, censor },
    mixin: requestFields,
  };
  const destination = o.destination ?? (o.pretty ? prettyStream() : undefined);
  const logger = destination ? pino(options, destination) : pino(options);
  // Child loggers are created with Object.create(parent) and so see the levels of their root.
  (logger as unknown as Record<symbol, unknown>)[LEVELS] = o.levels ?? {};
  return logger;
}

/**
 * pino-pretty as an in-process stream, loaded only when asked for: it is a dev dependency, so a
 * production install (npm ci --omit=dev) lacks it and the process then keeps JSON lines.
 */
function prettyStream(): DestinationStream | undefined {
  try {
    const require = createRequire(import.meta.url);
    const pretty = require('pino-pretty') as (o: Record<string, unknown>) => DestinationStream;
    return pretty({ colorize: process.stdout.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' });
  } catch {
    process.stderr.write('LOG_PRETTY is set but pino-pretty is not installed (it is a dev dependency); logging JSON lines\n');
    return undefined;
  }
}

/** The logger of one component: a child tagged `component`, at its LOG_LEVELS level if set. */
export function componentLogger(parent: Logger, component: LogComponent): Logger {
  const levels = (parent as unknown as Record<symbol, ComponentLevels | undefined>)[LEVELS];
  const level = levels?.[component];
  return parent.child({ component }, level ? { level } : {});
}

/**
 * Makes every line logged while `app` serves a request carry the request's correlation (the
 * mixin of createLogger reads it). Call before the app is ready.
 */
export function bindRequestLogContext<T extends FastifyInstance>(app: T): T {
  app.addHook('onRequest', (request, _reply, done) => {
    requestContext.run(request, done);
  });
  return app;
}
