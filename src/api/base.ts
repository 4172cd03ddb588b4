import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Ajv, type ErrorObject } from 'ajv';
import type { Logger } from 'pino';
import { CyclesError } from '../domain/errors.js';
import { newRequestId, newTraceId } from '../domain/ids.js';
import type { AuthContext } from '../domain/auth.js';
import type { Metrics } from '../observability/metrics.js';

declare module 'fastify' {
  interface FastifyRequest {
    cycles: { requestId: string; traceId: string; traceFlags?: string; auth?: AuthContext };
  }
  interface FastifyContextConfig {
    /** Operation name used in metrics and audit (the protocol's operationId). */
    operation?: string;
  }
}

export interface BaseAppOptions {
  plane: 'runtime' | 'admin' | 'events';
  logger: Logger;
  bodyLimitBytes: number;
  metrics: Metrics;
  /** Send the reference's X-RateLimit-* sentinels on every /v1 response (runtime plane). */
  rateLimitSentinels?: boolean;
}

const TRACE_ID = /^[0-9a-f]{32}$/;
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/** W3C traceparent first, then X-Cycles-Trace-Id; malformed values count as absent. */
export function pickTraceId(traceparent: unknown, flat: unknown): string {
  if (typeof traceparent === 'string') {
    const m = TRACEPARENT.exec(traceparent.trim());
    if (m && m[1] !== ZERO_TRACE && m[2] !== ZERO_SPAN) return m[1]!;
  }
  if (typeof flat === 'string' && TRACE_ID.test(flat) && flat !== ZERO_TRACE) return flat;
  return newTraceId();
}

/** The flags of a valid inbound traceparent whose trace id was adopted; they travel to webhooks. */
export function inboundTraceFlags(traceparent: unknown, traceId: string): string | undefined {
  if (typeof traceparent !== 'string') return undefined;
  const m = TRACEPARENT.exec(traceparent.trim());
  return m && m[1] === traceId ? m[3] : undefined;
}

/** Names the field an Ajv error is about, e.g. "body/estimate/amount must be >= 0". */
export function describeValidation(errors: ErrorObject[], context: string): string {
  const first = errors[0];
  if (!first) return 'Validation failed';
  const path = `${context}${first.instancePath}`;
  const params = first.params as Record<string, unknown>;
  if (first.keyword === 'additionalProperties') return `Validation failed: ${path} has unknown property '${String(params.additionalProperty)}'`;
  if (first.keyword === 'required') return `Validation failed: ${path} is missing required property '${String(params.missingProperty)}'`;
  if (first.keyword === 'anyOf' && context === 'body' && first.instancePath === '/subject') {
    return 'Validation failed: body/subject must contain at least one of tenant, workspace, app, workflow, agent, toolset';
  }
  return `Validation failed: ${path} ${first.message ?? 'is invalid'}`;
}

// Bodies are validated strictly (no coercion, unknown properties rejected); query strings and
// path parameters arrive as text, so they are coerced to the schema's types.
const bodyAjv = new Ajv({ allErrors: false, coerceTypes: false, removeAdditional: false, useDefaults: false, strict: false });
const queryAjv = new Ajv({ allErrors: false, coerceTypes: true, removeAdditional: false, useDefaults: false, strict: false });

export function sendError(reply: FastifyReply, request: FastifyRequest, err: CyclesError): FastifyReply {
  const body: Record<string, unknown> = {
    error: err.code,
    message: err.message,
    request_id: request.cycles.requestId,
    trace_id: request.cycles.traceId,
  };
  if (err.details) body.details = err.details;
  return reply.code(err.status).type('application/json').send(body);
}

/**
 * The Fastify instance every plane starts from: validation, correlation headers, the error
 * envelope and request metrics. App factories never listen; the CLI does.
 */
export function createBaseApp(opts: BaseAppOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: opts.logger,
    bodyLimit: opts.bodyLimitBytes,
    // Path ids are validated by the route schemas (e.g. reservation_id ≤ 128) with the protocol's
    // error envelope; Fastify's own 100-character cut-off would answer a bare 414 first.
    routerOptions: { maxParamLength: 512 },
    // Requests are not logged one by one; a per-request child logger would be pure overhead.
    childLoggerFactory: (logger) => logger,
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: () => newRequestId(),
    return503OnClosing: true,
    ajv: { customOptions: { removeAdditional: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.setValidatorCompiler(({ schema, httpPart }) => {
    const ajv = httpPart === 'body' ? bodyAjv : queryAjv;
    return ajv.compile(schema);
  });
  app.setSchemaErrorFormatter((errors, dataVar) => {
    const err = new CyclesError('INVALID_REQUEST', describeValidation(errors as ErrorObject[], dataVar));
    return err;
  });

  // JSON only. An empty body parses as "no body", so routes with an optional body (freeze,
  // unfreeze) accept it and routes with a required body report the missing body by name.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (typeof body === 'string' && body.trim() === '') {
      done(null, undefined);
      return;
    }
    parseJson(request, body as string, done);
  });

  app.decorateRequest('cycles', null as unknown as FastifyRequest['cycles']);
  app.addHook('onRequest', async (request, reply) => {
    const traceId = pickTraceId(request.headers.traceparent, request.headers['x-cycles-trace-id']);
    request.cycles = { requestId: String(request.id), traceId };
    const flags = inboundTraceFlags(request.headers.traceparent, traceId);
    if (flags !== undefined) request.cycles.traceFlags = flags;
    reply.header('x-request-id', request.cycles.requestId);
    reply.header('x-cycles-trace-id', traceId);
    if (opts.rateLimitSentinels && request.url.startsWith('/v1/')) {
      reply.header('x-ratelimit-remaining', '-1');
      reply.header('x-ratelimit-reset', '0');
    }
  });

  // Graceful shutdown. server.close() only reaps keep-alive sockets that are idle at that moment:
  // a request in flight when close starts is answered with `Connection: keep-alive`, and its socket
  // then holds close() open for keepAliveTimeout (72 s), past close-with-grace's delay. So while
  // closing, answers carry `Connection: close`, and sockets that still turn idle are reaped until
  // the server is closed. Requests that arrive meanwhile on an open socket get Fastify's 503
  // (return503OnClosing) before any handler runs: nothing is applied, and they can be retried.
  let closing = false;
  app.addHook('preClose', (done) => {
    closing = true;
    if (app.server.listening) {
      const reaper = setInterval(() => app.server.closeIdleConnections(), 50);
      reaper.unref();
      app.server.once('close', () => clearInterval(reaper));
    }
    done();
  });
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (closing) reply.header('connection', 'close');
    done(null, payload);
  });

  app.addHook('onResponse', async (request, reply) => {
    const operation = request.routeOptions.config?.operation ?? 'unmatched';
    const outcome = (reply as unknown as { cyclesOutcome?: string }).cyclesOutcome ?? (reply.statusCode < 400 ? 'ok' : 'error');
    opts.metrics.observeRequest(opts.plane, operation, reply.statusCode, outcome, reply.elapsedTime / 1000);
  });

  app.setErrorHandler((error: FastifyError | CyclesError | Error, request, reply) => {
    const err = toCyclesError(error);
    (reply as unknown as { cyclesOutcome?: string }).cyclesOutcome = err.code;
    if (err.status >= 500) request.log.error({ err: error, requestId: request.cycles?.requestId }, 'request failed');
    if (!request.cycles) request.cycles = { requestId: String(request.id), traceId: newTraceId() };
    return sendError(reply, request, err);
  });

  // A path served under other methods answers 405 with Allow (admin digest §0.3), not 404.
  const routes: Array<{ pattern: RegExp; methods: string[] }> = [];
  app.addHook('onRoute', (route) => {
    const url = route.url ?? route.path;
    // A catch-all (the CORS plugin's `OPTIONS *`) would make every unknown path look served.
    if (url === '*' || url === '/*') return;
    routes.push({ pattern: routePattern(url), methods: ([] as string[]).concat(route.method) });
  });

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] ?? '';
    const allowed = new Set(routes.filter((r) => r.pattern.test(path)).flatMap((r) => r.methods));
    // A route of this very method that handed over to not-found (a static file that does not
    // exist, say) means the resource is missing, not that the method is wrong.
    if (allowed.size > 0 && !allowed.has(request.method)) {
      const allow = [...allowed].sort().join(', ');
      (reply as unknown as { cyclesOutcome?: string }).cyclesOutcome = 'INVALID_REQUEST';
      reply.header('allow', allow);
      return sendError(reply, request, new CyclesError('INVALID_REQUEST', `Method ${request.method} is not supported for ${path}; allowed: ${allow}`, undefined, 405));
    }
    (reply as unknown as { cyclesOutcome?: string }).cyclesOutcome = 'NOT_FOUND';
    return sendError(reply, request, new CyclesError('NOT_FOUND', `No route for ${request.method} ${path}`));
  });

  return app as unknown as FastifyInstance;
}

/** A route URL as a matcher of concrete paths: `:param` is one segment, `*` the rest. */
export function routePattern(url: string): RegExp {
  const source = url
    .split('/')
    .map((segment) => {
      if (segment.startsWith(':')) return '[^/]+';
      if (segment === '*') return '.*';
      return segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    })
    .join('/');
  return new RegExp(`^${source}$`);
}

/** Maps anything thrown during a request to a protocol error; client mistakes never become 500. */
export function toCyclesError(error: unknown): CyclesError {
  if (error instanceof CyclesError) return error;
  const e = error as FastifyError & { validation?: ErrorObject[]; validationContext?: string };
  if (e.validation) return new CyclesError('INVALID_REQUEST', describeValidation(e.validation, e.validationContext ?? 'request'));
  switch (e.code) {
    case 'FST_ERR_CTP_INVALID_JSON':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new CyclesError('INVALID_REQUEST', 'Malformed request body: not valid JSON');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new CyclesError('INVALID_REQUEST', 'Request body is larger than the configured limit');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new CyclesError('INVALID_REQUEST', 'Request body must be application/json');
    default:
      break;
  }
  if (e instanceof SyntaxError) return new CyclesError('INVALID_REQUEST', 'Malformed request body: not valid JSON');
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return new CyclesError('INVALID_REQUEST', e.message || 'Invalid request');
  }
  const name = (e as Error)?.name ?? '';
  const msg = (e as Error)?.message ?? '';
  if (name === 'MaxRetriesPerRequestError' || /Connection is closed|ECONNREFUSED|Stream isn't writeable|ETIMEDOUT/.test(msg)) {
    return new CyclesError('INTERNAL_ERROR', 'Storage is unavailable; retry with the same idempotency key', undefined, 503);
  }
  return new CyclesError('INTERNAL_ERROR', 'Internal error');
}
