import type { FastifyInstance } from 'fastify';
import type { AuthHooks } from './auth.js';
import { authFailureThrottle, type AuthThrottleOptions } from './auth-throttle.js';
import { dashboardCors, DEFAULT_DASHBOARD_ORIGINS } from './cors.js';
import { apiDocs, DEFAULT_DOCS, type DocsSettings } from './docs.js';

/** What the governance plane adds around its routes (ADR 0016); an absent field takes its default. */
export interface AdminEdgeOptions {
  /** SWAGGER_ENABLED / CYCLES_DOCS_PUBLIC. Default: docs on, behind the admin key. */
  docs?: DocsSettings;
  /** DASHBOARD_CORS_ORIGIN. Default: http://localhost:5173. */
  corsOrigins?: readonly string[];
  /** CYCLES_AUTH_FAILURE_LIMIT and its counter store. Default: off. */
  authThrottle?: AuthThrottleOptions;
}

/**
 * Registers CORS, the auth-failure throttle and the API docs, in that order: CORS first so even
 * a throttled answer can be read by the dashboard; all before the routes, so the document
 * generator sees every route. Call it once, right after the root hooks and before any route.
 */
export async function adminEdge(app: FastifyInstance, hooks: AuthHooks, opts: AdminEdgeOptions = {}): Promise<void> {
  await dashboardCors(app, opts.corsOrigins ?? DEFAULT_DASHBOARD_ORIGINS);
  if (opts.authThrottle) authFailureThrottle(app, opts.authThrottle, app.log);
  await apiDocs(app, hooks, {
    ...(opts.docs ?? DEFAULT_DOCS),
    title: 'Cycles governance (admin) API',
    description: 'Tenants, budgets and funding, policies, API keys, webhooks, events, audit and introspection (port 7979).',
  });
}
