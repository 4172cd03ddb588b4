import type { FastifyInstance, FastifyRequest } from 'fastify';

export interface HealthDeps {
  /** Resolves when Redis answers PING within the probe's time limit. */
  pingRedis: () => Promise<boolean>;
  /** The Prometheus text exposition of this process (or of all workers of a cluster). */
  metricsSource: () => Promise<{ text: string; contentType: string }>;
  /** Guards /actuator/prometheus; undefined leaves it open (the internal events port). */
  metricsAuth?: (request: FastifyRequest) => Promise<void>;
}

/** Spring-Boot-compatible health endpoints (the reference's paths) and Prometheus metrics. */
export async function healthRoutes(app: FastifyInstance, deps: HealthDeps): Promise<void> {
  const health = async () => {
    const up = await deps.pingRedis();
    return { up, body: { status: up ? 'UP' : 'DOWN', components: { redis: { status: up ? 'UP' : 'DOWN' } } } };
  };
  app.get('/actuator/health', { config: { operation: 'health' } }, async (_request, reply) => {
    const h = await health();
    return reply.code(h.up ? 200 : 503).send(h.body);
  });
  app.get('/actuator/health/liveness', { config: { operation: 'liveness' } }, async () => ({ status: 'UP' }));
  app.get('/actuator/health/readiness', { config: { operation: 'readiness' } }, async (_request, reply) => {
    const h = await health();
    return reply.code(h.up ? 200 : 503).send({ status: h.body.status });
  });
  app.get('/actuator/prometheus', {
    config: { operation: 'prometheus' },
    ...(deps.metricsAuth ? { onRequest: deps.metricsAuth } : {}),
  }, async (_request, reply) => {
    const { text, contentType } = await deps.metricsSource();
    return reply.type(contentType).send(text);
  });
}
