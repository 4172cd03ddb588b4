import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { AdminDeps } from '../admin-app.js';
import { PolicyService } from '../../domain/policies.js';
import { PolicyStore } from '../../store/policy-store.js';
import { PolicyCreateRequest, PolicyIdParams, PolicyListQuery, PolicyUpdateRequest } from '../schemas/policies.js';

/** Policies (admin digest §2.3): create, list and update, with a tenant key or the admin key. */
export async function adminPolicyRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const admin = deps.stores.admin;
  const policies = new PolicyService(new PolicyStore(admin.redis, admin.scripts, admin.keys));
  const { hooks, audit } = deps;

  /** One success audit row per mutation (admin digest §2.8), attributed to the owning tenant. */
  const audited = (request: FastifyRequest, operation: string, policyId: string, tenantId: string, status: number) => {
    const auth = request.cycles.auth;
    const actorType = auth?.kind === 'admin' ? 'admin_on_behalf_of' : 'api_key';
    return audit.write({
      tenant_id: tenantId,
      ...(auth?.kind === 'tenant' ? { key_id: auth.keyId } : {}),
      operation,
      resource_type: 'policy',
      resource_id: policyId,
      request_id: request.cycles.requestId,
      trace_id: request.cycles.traceId,
      status,
      actor_type: actorType,
      source_ip: request.ip,
      metadata: { actor_type: actorType },
    });
  };

  r.post('/v1/admin/policies', {
    schema: { body: PolicyCreateRequest },
    config: { operation: 'createPolicy' },
    onRequest: hooks.tenantOrAdmin('policies:write'),
  }, async (request, reply) => {
    const { tenantId, policy } = await policies.create(request.cycles.auth!, request.body, request.cycles);
    await audited(request, 'createPolicy', String(policy.policy_id), tenantId, 201);
    return reply.code(201).send(policy);
  });

  r.get('/v1/admin/policies', {
    schema: { querystring: PolicyListQuery },
    config: { operation: 'listPolicies' },
    onRequest: hooks.tenantOrAdmin('policies:read'),
  }, async (request) => policies.list(request.cycles.auth!, request.query));

  r.patch('/v1/admin/policies/:policy_id', {
    schema: { params: PolicyIdParams, body: PolicyUpdateRequest },
    config: { operation: 'updatePolicy' },
    onRequest: hooks.tenantOrAdmin('policies:write'),
  }, async (request) => {
    const { tenantId, policy } = await policies.update(request.cycles.auth!, request.params.policy_id, request.body, request.cycles);
    await audited(request, 'updatePolicy', request.params.policy_id, tenantId, 200);
    return policy;
  });
}
