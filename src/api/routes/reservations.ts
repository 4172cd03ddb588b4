import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import {
  CommitRequest,
  ReleaseRequest,
  ReservationCreateRequest,
  ReservationExtendRequest,
  ReservationIdParams,
  ReservationListQuery,
} from '../schemas/runtime.js';
import type { RuntimeDeps } from '../runtime-app.js';

function idemHeader(headers: Record<string, unknown>): string | undefined {
  const v = headers['x-idempotency-key'];
  return typeof v === 'string' ? v : undefined;
}

/** Reservation lifecycle: create, commit, release, extend, get, list. */
export async function reservationRoutes(app: FastifyInstance, deps: RuntimeDeps): Promise<void> {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { runtime, listing, hooks, audit } = deps;

  r.post('/v1/reservations', {
    schema: { body: ReservationCreateRequest },
    config: { operation: 'createReservation' },
    onRequest: hooks.tenant('reservations:create'),
  }, async (request) =>
    runtime.reserve(request.cycles.auth!, request.body, idemHeader(request.headers), request.cycles));

  r.post('/v1/reservations/:reservation_id/commit', {
    schema: { params: ReservationIdParams, body: CommitRequest },
    config: { operation: 'commitReservation' },
    onRequest: hooks.tenant('reservations:commit'),
  }, async (request) =>
    runtime.commit(request.cycles.auth!, request.params.reservation_id, request.body, idemHeader(request.headers), request.cycles));

  r.post('/v1/reservations/:reservation_id/release', {
    schema: { params: ReservationIdParams, body: ReleaseRequest },
    config: { operation: 'releaseReservation' },
    onRequest: hooks.tenantOrAdmin('reservations:release'),
  }, async (request) => {
    const auth = request.cycles.auth!;
    const result = await runtime.release(auth, request.params.reservation_id, request.body, idemHeader(request.headers));
    if (auth.kind === 'admin' && !result.replay) {
      // An operator's force-release spends nothing but changes a tenant's ledger: audit it.
      await audit.write({
        tenant_id: result.tenantId,
        operation: 'releaseReservation',
        resource_type: 'reservation',
        resource_id: request.params.reservation_id,
        request_id: request.cycles.requestId,
        trace_id: request.cycles.traceId,
        status: 200,
        actor_type: 'admin_on_behalf_of',
        source_ip: request.ip,
        ...(request.headers['user-agent'] ? { user_agent: String(request.headers['user-agent']) } : {}),
        metadata: { actor_type: 'admin_on_behalf_of', reason: request.body.reason ?? null },
      });
    }
    return result.body;
  });

  r.post('/v1/reservations/:reservation_id/extend', {
    schema: { params: ReservationIdParams, body: ReservationExtendRequest },
    config: { operation: 'extendReservation' },
    onRequest: hooks.tenant('reservations:extend'),
  }, async (request) =>
    runtime.extend(request.cycles.auth!, request.params.reservation_id, request.body, idemHeader(request.headers)));

  r.get('/v1/reservations/:reservation_id', {
    schema: { params: ReservationIdParams },
    config: { operation: 'getReservation' },
    onRequest: hooks.tenantOrAdmin(['reservations:list', 'reservations:create']),
  }, async (request) => runtime.getReservation(request.cycles.auth!, request.params.reservation_id));

  r.get('/v1/reservations', {
    schema: { querystring: ReservationListQuery },
    config: { operation: 'listReservations' },
    onRequest: hooks.tenantOrAdmin(['reservations:list', 'reservations:create']),
  }, async (request) => listing.listReservations(request.cycles.auth!, request.query));
}
