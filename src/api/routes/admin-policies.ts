import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { AdminDeps } from '../admin-app.js';
import { auditSuccess } from '../plugins/audit-success.js';
import { PolicyService } from '../../domain/policies.js';
import { PolicyStore } from '../../store/policy-store.js';
import { PolicyCreateRequest, PolicyIdParams, PolicyListQuery, PolicyUpdateRequest } from '../schemas/policies.js';

/** Policies (admin digest §2.3): create, list and update, with a tenant key or the admin key. */
export async function adminPolicyRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const admin = deps.stores.admin;
  const policies = new PolicyService(new PolicyStore(admin.redis, admin.scripts, admin.keys));
  const { hooks, audit } = deps;


  r.post('/v1/admin/policies', {
    schema: { body: PolicyCreateRequest },
    config: { operation: 'createPolicy' },
    onRequest: hooks.tenantOrAdmin('policies:write'),
  }, async (request, reply) => {
    const { tenantId, policy } = await policies.create(request.cycles.auth!, request.body, request.cycles);
    await auditSuccess(audit, request, {
      operation: 'createPolicy',
      resourceType: 'policy',
      resourceId: String(policy.policy_id), tenantId,
      status: 201,
    });
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
    await auditSuccess(audit, request, {
      operation: 'updatePolicy',
      resourceType: 'policy',
      resourceId: request.params.policy_id, tenantId,
      status: 200,
    });
    return policy;
  });
}
