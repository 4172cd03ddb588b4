import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { AuditLog } from '../domain/audit.js';
import type { Authenticator } from '../domain/authenticator.js';
import type { ListingService } from '../domain/listing.js';
import type { RuntimeService } from '../domain/runtime.js';
import type { Metrics } from '../observability/metrics.js';
import { createBaseApp } from './base.js';
import { authHooks, type AuthHooks } from './plugins/auth.js';
import { apiDocs, DEFAULT_DOCS, type DocsSettings } from './plugins/docs.js';
import { runtimeRateLimit, type RuntimeRateLimitOptions } from './plugins/rate-limit.js';
import { healthRoutes } from './routes/health.js';
import { reservationRoutes } from './routes/reservations.js';
import { runtimeMiscRoutes } from './routes/runtime-misc.js';
import { publicRoutes } from './routes/public.js';

export interface RuntimeDeps {
  runtime: RuntimeService;
  listing: ListingService;
  audit: AuditLog;
  hooks: AuthHooks;
}

export interface RuntimeAppOptions {
  logger: Logger;
  bodyLimitBytes: number;
  metrics: Metrics;
  metricsSource: () => Promise<{ text: string; contentType: string }>;
  authenticator: Authenticator;
  runtime: RuntimeService;
  listing: ListingService;
  audit: AuditLog;
  pingRedis: () => Promise<boolean>;
  /** /openapi.json and /docs (SWAGGER_ENABLED, CYCLES_DOCS_PUBLIC); default on, behind the admin key. */
  docs?: DocsSettings;
  /** Per-tenant and per-key request limits (ADR 0017); absent or both rates 0 = off. */
  rateLimit?: RuntimeRateLimitOptions;
}

/** The runtime plane (:7878). Never listens; the CLI or a test does. */
export async function buildRuntimeApp(opts: RuntimeAppOptions): Promise<FastifyInstance> {
  // The reference sends X-RateLimit sentinels on every /v1 response; clients and dashboards read them.
  const app = createBaseApp({
    plane: 'runtime',
    logger: opts.logger,
    bodyLimitBytes: opts.bodyLimitBytes,
    metrics: opts.metrics,
    rateLimitSentinels: true,
  });
  const hooks = authHooks(opts.authenticator, 'UNAUTHORIZED');
  // With limiting on, the limiter replaces the sentinels with real figures on limited requests.
  if (opts.rateLimit) runtimeRateLimit(app, opts.rateLimit, app.log);
  // Before any route: the document generator collects routes as they are registered.
  await apiDocs(app, hooks, {
    ...(opts.docs ?? DEFAULT_DOCS),
    title: 'Cycles runtime API',
    description: 'Reserve, commit, release, extend, decide, events, balances and reservations (port 7878).',
  });
  const deps: RuntimeDeps = { runtime: opts.runtime, listing: opts.listing, audit: opts.audit, hooks };
  await app.register(async (scope) => reservationRoutes(scope, deps));
  await app.register(async (scope) => runtimeMiscRoutes(scope, deps));
  await app.register(async (scope) => publicRoutes(scope));
  await app.register(async (scope) =>
    healthRoutes(scope, { pingRedis: opts.pingRedis, metricsSource: opts.metricsSource, metricsAuth: hooks.admin() }));
  return app;
}
