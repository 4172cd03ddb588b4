import { lookup } from 'node:dns/promises';
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { AdminDeps } from '../admin-app.js';
import { auditSuccess } from '../plugins/audit-success.js';
import { CyclesError } from '../../domain/errors.js';
import { SecretCipher, WebhookService, type Resolver } from '../../domain/webhooks.js';
import { WebhookStore } from '../../store/webhook-store.js';
import {
  AdminWebhookListQuery, TenantWebhookListQuery, WebhookCreateQuery, WebhookCreateRequest, WebhookIdParams,
  WebhookSecurityConfig, WebhookUpdateRequest,
} from '../schemas/webhooks.js';

/** Every address a webhook host resolves to, for the blocked-range check (admin digest §5.7). */
const resolveAll: Resolver = async (hostname) => (await lookup(hostname, { all: true, verbatim: true })).map((a) => a.address);

/**
 * Webhook subscriptions (admin digest §2.5, §5) on the admin paths (admin key) and the tenant
 * self-service paths (tenant key; the by-id routes and the list also take the admin key), and the
 * webhook-security config (§2.9). Delivery, /test, /replay and delivery listings are the events
 * service's.
 */
export async function adminWebhookRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const admin = deps.stores.admin;
  const webhooks = new WebhookService(new WebhookStore(admin.redis, admin.scripts, admin.keys), new SecretCipher(deps.webhookSecretKey), resolveAll);
  const { hooks, audit } = deps;

  r.get('/v1/admin/config/webhook-security', {
    config: { operation: 'getWebhookSecurityConfig' },
    onRequest: hooks.admin(),
  }, async () => webhooks.securityConfig());

  r.put('/v1/admin/config/webhook-security', {
    schema: { body: WebhookSecurityConfig },
    config: { operation: 'updateWebhookSecurityConfig' },
    onRequest: hooks.admin(),
  }, async (request) => {
    const config = await webhooks.putSecurityConfig(request.body);
    await auditSuccess(audit, request, {
      operation: 'updateWebhookSecurityConfig', resourceType: 'config', resourceId: 'webhook-security', tenantId: undefined, status: 200,
    });
    return config;
  });

  // --- admin paths ---

  r.post('/v1/admin/webhooks', {
    schema: { body: WebhookCreateRequest, querystring: WebhookCreateQuery },
    config: { operation: 'createWebhookSubscription' },
    onRequest: hooks.admin(),
  }, async (request, reply) => {
    const { ownerId, subscription, signingSecret } = await webhooks.create(request.cycles.auth!, 'admin', request.query.tenant_id, request.body, request.cycles);
    await auditSuccess(audit, request, {
      operation: 'createWebhookSubscription', resourceType: 'webhook', resourceId: String(subscription.subscription_id), tenantId: ownerId, status: 201,
    });
    return reply.code(201).send({ subscription, signing_secret: signingSecret });
  });

  r.get('/v1/admin/webhooks', {
    schema: { querystring: AdminWebhookListQuery },
    config: { operation: 'listWebhookSubscriptions' },
    onRequest: hooks.admin(),
  }, async (request) => {
    const q = request.query;
    return webhooks.list({
      ...(q.tenant_id !== undefined && q.tenant_id !== '' ? { tenantId: q.tenant_id } : {}),
      status: q.status, eventType: q.event_type, search: q.search, cursor: q.cursor, limit: q.limit,
    });
  });

  r.get('/v1/admin/webhooks/:subscription_id', {
    schema: { params: WebhookIdParams },
    config: { operation: 'getWebhookSubscription' },
    onRequest: hooks.admin(),
  }, async (request) => webhooks.get(request.cycles.auth!, request.params.subscription_id));

  r.patch('/v1/admin/webhooks/:subscription_id', {
    schema: { params: WebhookIdParams, body: WebhookUpdateRequest },
    config: { operation: 'updateWebhookSubscription' },
    onRequest: hooks.admin(),
  }, async (request) => {
    const id = request.params.subscription_id;
    const { ownerId, subscription } = await webhooks.update(request.cycles.auth!, 'admin', id, request.body, request.cycles);
    await auditSuccess(audit, request, { operation: 'updateWebhookSubscription', resourceType: 'webhook', resourceId: id, tenantId: ownerId, status: 200 });
    return subscription;
  });

  r.delete('/v1/admin/webhooks/:subscription_id', {
    schema: { params: WebhookIdParams },
    config: { operation: 'deleteWebhookSubscription' },
    onRequest: hooks.admin(),
  }, async (request, reply) => {
    const id = request.params.subscription_id;
    const { ownerId } = await webhooks.delete(request.cycles.auth!, 'admin', id, request.cycles);
    await auditSuccess(audit, request, { operation: 'deleteWebhookSubscription', resourceType: 'webhook', resourceId: id, tenantId: ownerId, status: 204 });
    return reply.code(204).send();
  });

  // --- tenant self-service paths ---

  r.post('/v1/webhooks', {
    schema: { body: WebhookCreateRequest },
    config: { operation: 'createTenantWebhook' },
    onRequest: hooks.tenant('webhooks:write'),
  }, async (request, reply) => {
    const { ownerId, subscription, signingSecret } = await webhooks.create(request.cycles.auth!, 'tenant', undefined, request.body, request.cycles);
    await auditSuccess(audit, request, {
      operation: 'createTenantWebhook', resourceType: 'webhook', resourceId: String(subscription.subscription_id), tenantId: ownerId, status: 201,
    });
    return reply.code(201).send({ subscription, signing_secret: signingSecret });
  });

  r.get('/v1/webhooks', {
    schema: { querystring: TenantWebhookListQuery },
    config: { operation: 'listTenantWebhooks' },
    onRequest: hooks.tenantOrAdmin('webhooks:read'),
  }, async (request) => {
    const auth = request.cycles.auth!;
    const q = request.query;
    let tenantId: string;
    if (auth.kind === 'tenant') {
      if (q.tenant !== undefined) throw new CyclesError('INVALID_REQUEST', 'tenant query parameter must not be set when using a tenant API key');
      tenantId = auth.tenantId;
    } else {
      if (q.tenant === undefined || q.tenant.trim() === '') {
        throw new CyclesError('INVALID_REQUEST', 'tenant query parameter is required when using admin key authentication');
      }
      tenantId = q.tenant.trim();
    }
    return webhooks.list({ tenantId, status: q.status, cursor: q.cursor, limit: q.limit });
  });

  r.get('/v1/webhooks/:subscription_id', {
    schema: { params: WebhookIdParams },
    config: { operation: 'getTenantWebhook' },
    onRequest: hooks.tenantOrAdmin('webhooks:read'),
  }, async (request) => webhooks.get(request.cycles.auth!, request.params.subscription_id));

  r.patch('/v1/webhooks/:subscription_id', {
    schema: { params: WebhookIdParams, body: WebhookUpdateRequest },
    config: { operation: 'updateTenantWebhook' },
    onRequest: hooks.tenantOrAdmin('webhooks:write'),
  }, async (request) => {
    const id = request.params.subscription_id;
    const { ownerId, subscription } = await webhooks.update(request.cycles.auth!, 'tenant', id, request.body, request.cycles);
    await auditSuccess(audit, request, { operation: 'updateTenantWebhook', resourceType: 'webhook', resourceId: id, tenantId: ownerId, status: 200 });
    return subscription;
  });

  r.delete('/v1/webhooks/:subscription_id', {
    schema: { params: WebhookIdParams },
    config: { operation: 'deleteTenantWebhook' },
    onRequest: hooks.tenantOrAdmin('webhooks:write'),
  }, async (request, reply) => {
    const id = request.params.subscription_id;
    const { ownerId } = await webhooks.delete(request.cycles.auth!, 'tenant', id, request.cycles);
    await auditSuccess(audit, request, { operation: 'deleteTenantWebhook', resourceType: 'webhook', resourceId: id, tenantId: ownerId, status: 204 });
    return reply.code(204).send();
  });
}
