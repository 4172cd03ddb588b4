import fastifyCors, { type FastifyCorsOptions } from '@fastify/cors';
import type { FastifyInstance, FastifyRequest } from 'fastify';

/**
 * CORS for the operator dashboard, which runs on another origin and calls the admin plane from
 * the browser (ADR 0016). Credentials travel in headers (X-Admin-API-Key, X-Cycles-API-Key), never
 * in cookies, so credentialed CORS is not needed and `*` is a valid setting.
 */
export const DEFAULT_DASHBOARD_ORIGINS = ['http://localhost:5173'];
export const CORS_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'];
export const CORS_ALLOWED_HEADERS = ['X-Admin-API-Key', 'X-Cycles-API-Key', 'Content-Type', 'X-Request-Id', 'traceparent', 'X-Cycles-Trace-Id'];
/** Response headers the dashboard may read; Retry-After tells it when a 429 ends. */
export const CORS_EXPOSED_HEADERS = ['X-Request-Id', 'X-Cycles-Trace-Id', 'Retry-After'];
/** How long a browser may reuse a preflight answer, in seconds (browsers cap it at 2 h or less). */
export const CORS_MAX_AGE_S = 600;

/** A real preflight names an origin and the method it wants; any other OPTIONS is a plain request. */
function isPreflight(request: FastifyRequest): boolean {
  return request.method === 'OPTIONS' && request.headers.origin !== undefined && request.headers['access-control-request-method'] !== undefined;
}

export async function dashboardCors(app: FastifyInstance, origins: readonly string[]): Promise<void> {
  const enabled: FastifyCorsOptions = {
    origin: origins.includes('*') ? '*' : [...origins],
    methods: CORS_METHODS,
    allowedHeaders: CORS_ALLOWED_HEADERS,
    exposedHeaders: CORS_EXPOSED_HEADERS,
    maxAge: CORS_MAX_AGE_S,
    credentials: false,
  };
  // An OPTIONS request that is not a preflight gets no CORS handling: the plugin's catch-all
  // OPTIONS route then hands it to the not-found handler, which answers 405 with Allow (or 404)
  // in the protocol's error envelope, as before CORS existed.
  const disabled: FastifyCorsOptions = { origin: false };
  await app.register(fastifyCors, {
    hook: 'onRequest',
    delegator: (request: FastifyRequest, callback: (error: Error | null, options?: FastifyCorsOptions) => void) => {
      callback(null, request.method === 'OPTIONS' && !isPreflight(request) ? disabled : enabled);
    },
  });
}
