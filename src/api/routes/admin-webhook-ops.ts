import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { AdminDeps } from '../admin-app.js';
import { auditSuccess } from '../plugins/audit-success.js';
import type { WebhookOps } from '../../domain/webhook-ops.js';
import { WebhookIdParams } from '../schemas/webhooks.js';

const ReplayRequest = Type.Object({
  from: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  to: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  event_types: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 128 }), { maxItems: 100 })),
  max_events: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
}, { additionalProperties: false });

/**
 * The test probe (admin and tenant paths) and replay (admin path) of a webhook subscription
 * (admin digest §5.8–§5.9). The probe answers synchronously; replay answers 202 once the selected
 * deliveries are queued for the events service.
 */
export async function adminWebhookOpsRoutes(app: FastifyInstance, deps: AdminDeps, ops: WebhookOps): Promise<void> {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { hooks, audit } = deps;

  r.post('/v1/admin/webhooks/:subscription_id/test', {
    schema: { params: WebhookIdParams },
    config: { operation: 'testWebhookSubscription' },
    onRequest: hooks.admin(),
  }, async (request) => {
    const result = await ops.test(request.cycles.auth!, request.params.subscription_id);
    await auditSuccess(audit, request, {
      operation: 'testWebhookSubscription', resourceType: 'webhook', resourceId: request.params.subscription_id, tenantId: undefined, status: 200,
    });
    return result;
  });

  r.post('/v1/webhooks/:subscription_id/test', {
    schema: { params: WebhookIdParams },
    config: { operation: 'testTenantWebhook' },
    onRequest: hooks.tenantOrAdmin('webhooks:write'),
  }, async (request) => {
    const result = await ops.test(request.cycles.auth!, request.params.subscription_id);
    await auditSuccess(audit, request, {
      operation: 'testTenantWebhook', resourceType: 'webhook', resourceId: request.params.subscription_id, tenantId: undefined, status: 200,
    });
    return result;
  });

  r.post('/v1/admin/webhooks/:subscription_id/replay', {
    schema: { params: WebhookIdParams, body: ReplayRequest },
    config: { operation: 'replayEvents' },
    onRequest: hooks.admin(),
  }, async (request, reply) => {
    const { owner, response } = await ops.replay(request.cycles.auth!, request.params.subscription_id, request.body);
    await auditSuccess(audit, request, {
      operation: 'replayEvents', resourceType: 'webhook', resourceId: request.params.subscription_id, tenantId: owner, status: 202,
    });
    return reply.code(202).send(response);
  });
}
