import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { AdminService } from '../domain/admin.js';
import type { AuditLog } from '../domain/audit.js';
import type { Authenticator } from '../domain/authenticator.js';
import type { Metrics } from '../observability/metrics.js';
import { createBaseApp } from './base.js';
import { authHooks, type AuthHooks } from './plugins/auth.js';
import { adminEdge, type AdminEdgeOptions } from './plugins/admin-edge.js';
import { governanceHooks } from './plugins/governance.js';
import { adminRoutes } from './routes/admin.js';
import { adminListingRoutes } from './routes/admin-listings.js';
import { adminPolicyRoutes } from './routes/admin-policies.js';
import { adminBulkRoutes } from './routes/admin-bulk.js';
import { adminWebhookRoutes } from './routes/admin-webhooks.js';
import { adminEventRoutes } from './routes/admin-events.js';
import { adminWebhookOpsRoutes } from './routes/admin-webhook-ops.js';
import { adminReconcileRoutes } from './routes/admin-reconcile.js';
import type { WebhookOps } from '../domain/webhook-ops.js';
import type { Queue } from 'bullmq';
import { queueConsole } from './plugins/queue-console.js';
import type { AdminStore } from '../store/admin-store.js';
import type { RuntimeStore } from '../store/runtime-store.js';
import { healthRoutes } from './routes/health.js';

export interface AdminDeps {
  admin: AdminService;
  audit: AuditLog;
  hooks: AuthHooks;
  /** Stores, for route plugins that build their own domain service at registration. */
  stores: { admin: AdminStore; runtime: RuntimeStore };
  authenticator: Authenticator;
  /** AES-256-GCM key for webhook signing secrets at rest. */
  webhookSecretKey: Buffer;
}

export interface AdminAppOptions {
  logger: Logger;
  bodyLimitBytes: number;
  metrics: Metrics;
  metricsSource: () => Promise<{ text: string; contentType: string }>;
  authenticator: Authenticator;
  admin: AdminService;
  audit: AuditLog;
  stores: { admin: AdminStore; runtime: RuntimeStore };
  pingRedis: () => Promise<boolean>;
  webhookSecretKey: Buffer;
  /** The events service's queues, shown by bull-board at /admin/queues; absent = no console. */
  queues?: () => readonly Queue[];
  /** Webhook test probe and replay; absent = those routes are not served. */
  webhookOps?: WebhookOps;
  /** API docs, dashboard CORS and the auth-failure throttle (ADR 0016); defaults when absent. */
  edge?: AdminEdgeOptions;
}

/** The governance plane (:7979). Never listens; the CLI or a test does. */
export async function buildAdminApp(opts: AdminAppOptions): Promise<FastifyInstance> {
  const app = createBaseApp({ plane: 'admin', logger: opts.logger, bodyLimitBytes: opts.bodyLimitBytes, metrics: opts.metrics });
  // Inbound X-Request-Id and one audit row per failed request: governance plane only.
  governanceHooks(app, opts.audit);
  const hooks = authHooks(opts.authenticator, 'FORBIDDEN');
  await adminEdge(app, hooks, opts.edge);
  const deps: AdminDeps = { admin: opts.admin, audit: opts.audit, hooks, stores: opts.stores, authenticator: opts.authenticator, webhookSecretKey: opts.webhookSecretKey };
  await app.register(async (scope) => adminRoutes(scope, deps));
  await app.register(async (scope) => adminListingRoutes(scope, deps));
  await app.register(async (scope) => adminPolicyRoutes(scope, deps));
  await app.register(async (scope) => adminBulkRoutes(scope, deps));
  await app.register(async (scope) => adminWebhookRoutes(scope, deps));
  await app.register(async (scope) => adminEventRoutes(scope, deps));
  await app.register(async (scope) => adminReconcileRoutes(scope, deps));
  if (opts.queues) await queueConsole(app, hooks, opts.queues());
  const ops = opts.webhookOps;
  if (ops) await app.register(async (scope) => adminWebhookOpsRoutes(scope, deps, ops));
  await app.register(async (scope) =>
    healthRoutes(scope, { pingRedis: opts.pingRedis, metricsSource: opts.metricsSource, metricsAuth: hooks.admin() }));
  return app;
}
