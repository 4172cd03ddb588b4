import Fastify, { LogController, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { newRequestId, newTraceId } from '../domain/ids.js';

/**
 * What a service port answers while the process waits for Redis at start (ADR 0018): liveness
 * UP (the process is fine, restarting it would not help), health and readiness DOWN, and every
 * other request 503 in the protocol's error envelope, so a load balancer keeps traffic away and a
 * client retries. The CLI closes it and listens with the real app once Redis answered and passed
 * the startup check.
 */
export function buildStandbyApp(logger: Logger): FastifyInstance {
  const app = Fastify({
    loggerInstance: logger,
    childLoggerFactory: (l) => l,
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: () => newRequestId(),
  });
  const down = { status: 'DOWN', components: { redis: { status: 'DOWN' } } };
  app.get('/actuator/health/liveness', async () => ({ status: 'UP' }));
  app.get('/actuator/health', async (_request, reply) => reply.code(503).send(down));
  app.get('/actuator/health/readiness', async (_request, reply) => reply.code(503).send({ status: 'DOWN' }));
  app.setNotFoundHandler((request, reply) => {
    const traceId = newTraceId();
    reply.header('x-request-id', String(request.id)).header('x-cycles-trace-id', traceId).header('retry-after', '1');
    return reply.code(503).send({
      error: 'INTERNAL_ERROR',
      message: 'Storage is unavailable; retry with the same idempotency key',
      request_id: String(request.id),
      trace_id: traceId,
    });
  });
  return app as unknown as FastifyInstance;
}
