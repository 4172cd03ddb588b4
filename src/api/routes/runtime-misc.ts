import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { BalancesQuery, DecisionRequest, EventCreateRequest } from '../schemas/runtime.js';
import type { RuntimeDeps } from '../runtime-app.js';

function idemHeader(headers: Record<string, unknown>): string | undefined {
  const v = headers['x-idempotency-key'];
  return typeof v === 'string' ? v : undefined;
}

/** decide, balances and direct-debit events. */
export async function runtimeMiscRoutes(app: FastifyInstance, deps: RuntimeDeps): Promise<void> {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { runtime, listing, hooks } = deps;

  r.post('/v1/decide', {
    schema: { body: DecisionRequest },
    config: { operation: 'decide' },
    onRequest: hooks.tenant('reservations:create'),
  }, async (request) => runtime.decide(request.cycles.auth!, request.body, idemHeader(request.headers), request.cycles));

  r.get('/v1/balances', {
    schema: { querystring: BalancesQuery },
    config: { operation: 'getBalances' },
    onRequest: hooks.tenant('balances:read'),
  }, async (request) => listing.balances(request.cycles.auth!, request.query));

  r.post('/v1/events', {
    schema: { body: EventCreateRequest },
    config: { operation: 'createEvent' },
    onRequest: hooks.tenant(['reservations:commit', 'reservations:create']),
  }, async (request, reply) => {
    const body = await runtime.createEvent(request.cycles.auth!, request.body, idemHeader(request.headers), request.cycles);
    return reply.code(201).send(body);
  });
}
