import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { introspect } from '../../domain/admin.js';
import {
  ApiKeyCreateRequest,
  AuditQuery,
  BudgetCreateRequest,
  BudgetFundingRequest,
  BudgetQuery,
  BudgetStatusRequest,
  BudgetUpdateRequest,
  KeyIdParams,
  RevokeQuery,
  TenantCreateRequest,
  TenantIdParams,
  TenantUpdateRequest,
} from '../schemas/admin.js';
import type { AdminDeps } from '../admin-app.js';

/** Governance operations the runtime needs now: tenants, keys, budgets, audit, introspection. */
export async function adminRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { admin, hooks, audit } = deps;

  /** One success audit row per mutation (admin digest §2.8). */
  const audited = async (
    request: FastifyRequest,
    operation: string,
    resourceType: string,
    resourceId: string,
    tenantId: string | undefined,
    status: number,
  ) => {
    const auth = request.cycles.auth;
    await audit.write({
      tenant_id: tenantId ?? '__admin__',
      ...(auth?.kind === 'tenant' ? { key_id: auth.keyId } : {}),
      operation,
      resource_type: resourceType,
      resource_id: resourceId,
      request_id: request.cycles.requestId,
      trace_id: request.cycles.traceId,
      status,
      actor_type: auth?.kind === 'admin' ? 'admin_on_behalf_of' : 'api_key',
      source_ip: request.ip,
      metadata: { actor_type: auth?.kind === 'admin' ? 'admin_on_behalf_of' : 'api_key' },
    });
  };

  r.post('/v1/admin/tenants', {
    schema: { body: TenantCreateRequest },
    config: { operation: 'createTenant' },
    onRequest: hooks.admin(),
  }, async (request, reply) => {
    const { created, tenant } = await admin.createTenant(request.cycles.auth!, request.body, request.cycles);
    await audited(request, 'createTenant', 'tenant', request.body.tenant_id, request.body.tenant_id, created ? 201 : 200);
    return reply.code(created ? 201 : 200).send(tenant);
  });

  r.get('/v1/admin/tenants/:tenant_id', {
    schema: { params: TenantIdParams },
    config: { operation: 'getTenant' },
    onRequest: hooks.admin(),
  }, async (request) => admin.getTenant(request.params.tenant_id));

  r.patch('/v1/admin/tenants/:tenant_id', {
    schema: { params: TenantIdParams, body: TenantUpdateRequest },
    config: { operation: 'updateTenant' },
    onRequest: hooks.admin(),
  }, async (request) => {
    const tenant = await admin.updateTenant(request.cycles.auth!, request.params.tenant_id, request.body, request.cycles);
    await audited(request, 'updateTenant', 'tenant', request.params.tenant_id, request.params.tenant_id, 200);
    return tenant;
  });

  r.post('/v1/admin/api-keys', {
    schema: { body: ApiKeyCreateRequest },
    config: { operation: 'createApiKey' },
    onRequest: hooks.admin(),
  }, async (request, reply) => {
    const key = await admin.createApiKey(request.body);
    await audited(request, 'createApiKey', 'api_key', String(key.key_id), request.body.tenant_id, 201);
    return reply.code(201).send(key);
  });

  r.delete('/v1/admin/api-keys/:key_id', {
    schema: { params: KeyIdParams, querystring: RevokeQuery },
    config: { operation: 'revokeApiKey' },
    onRequest: hooks.admin(),
  }, async (request) => {
    const key = await admin.revokeApiKey(request.params.key_id, request.query.reason);
    await audited(request, 'revokeApiKey', 'api_key', request.params.key_id, String(key.tenant_id), 200);
    return key;
  });

  r.post('/v1/admin/budgets', {
    schema: { body: BudgetCreateRequest },
    config: { operation: 'createBudget' },
    onRequest: hooks.tenantOrAdmin('budgets:write'),
  }, async (request, reply) => {
    const ledger = await admin.createBudget(request.cycles.auth!, request.body, request.cycles);
    await audited(request, 'createBudget', 'budget', String(ledger.ledger_id), String(ledger.tenant_id), 201);
    return reply.code(201).send(ledger);
  });

  r.get('/v1/admin/budgets/lookup', {
    schema: { querystring: BudgetQuery },
    config: { operation: 'lookupBudget' },
    onRequest: hooks.tenantOrAdmin('budgets:read'),
  }, async (request) => admin.lookupBudget(request.cycles.auth!, request.query.scope, request.query.unit));

  r.patch('/v1/admin/budgets', {
    schema: { querystring: BudgetQuery, body: BudgetUpdateRequest },
    config: { operation: 'updateBudget' },
    onRequest: hooks.admin(),
  }, async (request) => {
    const ledger = await admin.updateBudget(request.cycles.auth!, request.query, request.body, request.cycles);
    await audited(request, 'updateBudget', 'budget', String(ledger.ledger_id), String(ledger.tenant_id), 200);
    return ledger;
  });

  r.post('/v1/admin/budgets/fund', {
    schema: { querystring: BudgetQuery, body: BudgetFundingRequest },
    config: { operation: 'fundBudget' },
    onRequest: hooks.tenantOrAdmin('budgets:write'),
  }, async (request) => {
    const result = await admin.fundBudget(request.cycles.auth!, request.query, request.body, request.cycles);
    const auth = request.cycles.auth!;
    const tenantId = auth.kind === 'tenant' ? auth.tenantId : request.query.tenant_id;
    await audited(request, 'fundBudget', 'budget', `${request.query.scope}:${request.query.unit}`, tenantId, 200);
    return result;
  });

  for (const [path, target, operation] of [
    ['/v1/admin/budgets/freeze', 'FROZEN', 'freezeBudget'],
    ['/v1/admin/budgets/unfreeze', 'ACTIVE', 'unfreezeBudget'],
  ] as const) {
    r.post(path, {
      schema: { querystring: BudgetQuery, body: BudgetStatusRequest },
      config: { operation },
      onRequest: hooks.admin(),
      preValidation: async (request) => {
        // The body of freeze/unfreeze is optional.
        if (request.body === undefined || request.body === null) request.body = {};
      },
    }, async (request) => {
      const ledger = await admin.setBudgetStatus(request.cycles.auth!, request.query, target, request.body?.reason, request.cycles);
      await audited(request, operation, 'budget', String(ledger.ledger_id), String(ledger.tenant_id), 200);
      return ledger;
    });
  }

  r.get('/v1/admin/audit/logs', {
    schema: { querystring: AuditQuery },
    config: { operation: 'listAuditLogs' },
    onRequest: hooks.admin(),
  }, async (request) => audit.list(request.query));

  r.get('/v1/auth/introspect', {
    config: { operation: 'introspectAuth' },
    onRequest: hooks.tenantOrAdmin([]),
  }, async (request) => introspect(request.cycles.auth!));
}
