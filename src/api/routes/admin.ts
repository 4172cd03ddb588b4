import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { introspect, type CascadeChange, type CascadeReport } from '../../domain/admin.js';
import type { AuditLog } from '../../domain/audit.js';
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
import { auditSuccess } from '../plugins/audit-success.js';

const CASCADE_EVENT_KIND: Record<CascadeChange['kind'], string> = {
  budget: 'budget.closed_via_tenant_cascade',
  webhook_subscription: 'webhook.disabled_via_tenant_cascade',
  api_key: 'api_key.revoked_via_tenant_cascade',
};

/**
 * One audit row per child a close cascade moved (admin digest §6): operation
 * tenant_close_cascade under the child's tenant, with the cascade's correlation id and the
 * transition in metadata. Audit is best effort (a write failure never fails the request); the
 * outbox events are the durable record.
 */
export async function auditCascade(audit: AuditLog, request: FastifyRequest, tenantId: string, report: CascadeReport): Promise<void> {
  for (const c of report.changes) {
    const metadata: Record<string, unknown> = {
      actor_type: 'admin_on_behalf_of',
      cascade: 'tenant_close',
      event_kind: CASCADE_EVENT_KIND[c.kind],
      correlation_id: report.correlationId,
      prior_status: c.priorStatus,
      new_status: c.newStatus,
    };
    if (c.name !== undefined) metadata.name = c.name;
    if (c.scope !== undefined) metadata.scope = c.scope;
    if (c.unit !== undefined) metadata.unit = c.unit;
    if (c.releasedAmount !== undefined) metadata.released_reserved_amount = c.releasedAmount;
    await audit.write({
      tenant_id: tenantId,
      operation: 'tenant_close_cascade',
      resource_type: c.kind,
      resource_id: c.id,
      request_id: request.cycles.requestId,
      trace_id: request.cycles.traceId,
      status: 200,
      actor_type: 'admin_on_behalf_of',
      source_ip: request.ip,
      metadata,
    });
  }
}

/** A run that stopped at its bound answers 200 and says so; the next close finishes it. */
export function markCascadeProgress(reply: FastifyReply, report: CascadeReport | undefined): void {
  if (report && !report.complete) reply.header('x-cycles-cascade-status', 'in_progress').header('retry-after', '1');
}

/** Governance operations the runtime needs now: tenants, keys, budgets, audit, introspection. */
export async function adminRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { admin, hooks, audit } = deps;


  r.post('/v1/admin/tenants', {
    schema: { body: TenantCreateRequest },
    config: { operation: 'createTenant' },
    onRequest: hooks.admin(),
  }, async (request, reply) => {
    const { created, tenant } = await admin.createTenant(request.cycles.auth!, request.body, request.cycles);
    await auditSuccess(audit, request, {
      operation: 'createTenant',
      resourceType: 'tenant',
      resourceId: request.body.tenant_id,
      tenantId: request.body.tenant_id,
      status: created ? 201 : 200,
    });
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
  }, async (request, reply) => {
    const tenantId = request.params.tenant_id;
    const { tenant, cascade } = await admin.patchTenant(request.cycles.auth!, tenantId, request.body, request.cycles);
    if (cascade) await auditCascade(audit, request, tenantId, cascade);
    markCascadeProgress(reply, cascade);
    await auditSuccess(audit, request, {
      operation: 'updateTenant',
      resourceType: 'tenant',
      resourceId: request.params.tenant_id,
      tenantId: request.params.tenant_id,
      status: 200,
    });
    return tenant;
  });

  r.post('/v1/admin/api-keys', {
    schema: { body: ApiKeyCreateRequest },
    config: { operation: 'createApiKey' },
    onRequest: hooks.admin(),
  }, async (request, reply) => {
    const key = await admin.createApiKey(request.body, { auth: request.cycles.auth!, corr: request.cycles });
    await auditSuccess(audit, request, {
      operation: 'createApiKey',
      resourceType: 'api_key',
      resourceId: String(key.key_id),
      tenantId: request.body.tenant_id,
      status: 201,
    });
    return reply.code(201).send(key);
  });

  r.delete('/v1/admin/api-keys/:key_id', {
    schema: { params: KeyIdParams, querystring: RevokeQuery },
    config: { operation: 'revokeApiKey' },
    onRequest: hooks.admin(),
  }, async (request) => {
    const key = await admin.revokeApiKey(request.params.key_id, request.query.reason, { auth: request.cycles.auth!, corr: request.cycles });
    await auditSuccess(audit, request, {
      operation: 'revokeApiKey',
      resourceType: 'api_key',
      resourceId: request.params.key_id,
      tenantId: String(key.tenant_id),
      status: 200,
    });
    return key;
  });

  r.post('/v1/admin/budgets', {
    schema: { body: BudgetCreateRequest },
    config: { operation: 'createBudget' },
    onRequest: hooks.tenantOrAdmin('budgets:write'),
  }, async (request, reply) => {
    const ledger = await admin.createBudget(request.cycles.auth!, request.body, request.cycles);
    await auditSuccess(audit, request, {
      operation: 'createBudget',
      resourceType: 'budget',
      resourceId: String(ledger.ledger_id),
      tenantId: String(ledger.tenant_id),
      status: 201,
    });
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
    await auditSuccess(audit, request, {
      operation: 'updateBudget',
      resourceType: 'budget',
      resourceId: String(ledger.ledger_id),
      tenantId: String(ledger.tenant_id),
      status: 200,
    });
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
    await auditSuccess(audit, request, {
      operation: 'fundBudget',
      resourceType: 'budget',
      resourceId: `${request.query.scope}:${request.query.unit}`, tenantId,
      status: 200,
    });
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
      await auditSuccess(audit, request, {
      operation,
      resourceType: 'budget',
      resourceId: String(ledger.ledger_id),
      tenantId: String(ledger.tenant_id),
      status: 200,
    });
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
