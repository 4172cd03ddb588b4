import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { AdminDeps } from '../admin-app.js';
import { EventService, OverviewService } from '../../domain/events.js';
import { EventStore } from '../../store/event-store.js';
import { ListingStore } from '../../store/listing-store.js';
import { WebhookStore } from '../../store/webhook-store.js';
import { WebhookIdParams } from '../schemas/webhooks.js';
import { AdminEventListQuery, DeliveryListQuery, EventIdParams, TenantEventListQuery } from '../schemas/events.js';

/**
 * Reads of the event log and the webhook delivery log (admin digest §2.6, §2.7: the normative
 * listEvents, getEvent, listTenantEvents, listWebhookDeliveries, listTenantWebhookDeliveries) and
 * the admin overview (§2.10). The events service writes what these read. Reads write no success
 * audit row; failures get theirs from the governance hooks.
 */
export async function adminEventRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { hooks } = deps;
  const admin = deps.stores.admin;
  const store = new EventStore(admin.redis, admin.keys);
  const events = new EventService(store);
  const overview = new OverviewService(
    store,
    new ListingStore(admin.redis, admin.scripts, admin.keys),
    new WebhookStore(admin.redis, admin.scripts, admin.keys),
  );

  r.get('/v1/admin/events', {
    schema: { querystring: AdminEventListQuery },
    config: { operation: 'listEvents' },
    onRequest: hooks.admin(),
  }, async (request) => events.listEvents(request.query));

  r.get('/v1/admin/events/:event_id', {
    schema: { params: EventIdParams },
    config: { operation: 'getEvent' },
    onRequest: hooks.admin(),
  }, async (request) => events.getEvent(request.params.event_id));

  // Tenant key only: /v1/events is not on the dual-auth allowlist (admin digest §0.2).
  r.get('/v1/events', {
    schema: { querystring: TenantEventListQuery },
    config: { operation: 'listTenantEvents' },
    onRequest: hooks.tenant('events:read'),
  }, async (request) => events.listTenantEvents(request.cycles.auth!, request.query));

  r.get('/v1/admin/webhooks/:subscription_id/deliveries', {
    schema: { params: WebhookIdParams, querystring: DeliveryListQuery },
    config: { operation: 'listWebhookDeliveries' },
    onRequest: hooks.admin(),
  }, async (request) => events.listDeliveries(request.cycles.auth!, request.params.subscription_id, request.query));

  // GET /v1/webhooks/{id}… is on the dual-auth allowlist: the admin key may read any owner's.
  r.get('/v1/webhooks/:subscription_id/deliveries', {
    schema: { params: WebhookIdParams, querystring: DeliveryListQuery },
    config: { operation: 'listTenantWebhookDeliveries' },
    onRequest: hooks.tenantOrAdmin('webhooks:read'),
  }, async (request) => events.listDeliveries(request.cycles.auth!, request.params.subscription_id, request.query));

  r.get('/v1/admin/overview', {
    config: { operation: 'getAdminOverview' },
    onRequest: hooks.admin(),
  }, async () => overview.overview());
}
