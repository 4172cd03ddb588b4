import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { AdminDeps } from '../admin-app.js';
import { AdminListingService } from '../../domain/admin-listings.js';
import type { AuditLog } from '../../domain/audit.js';
import { BulkService, type BulkOutcome } from '../../domain/bulk.js';
import { BulkStore } from '../../store/bulk-store.js';
import { ListingStore } from '../../store/listing-store.js';
import { WebhookStore } from '../../store/webhook-store.js';
import { BudgetBulkActionRequest, TenantBulkActionRequest, WebhookBulkActionRequest } from '../schemas/bulk.js';
import { auditCascade } from './admin.js';

/**
 * The one audit row of a bulk invocation (admin digest §2.11): resource_id "bulk-action", with
 * the action and the row counts in metadata.
 */
function auditBulk(audit: AuditLog, request: FastifyRequest, operation: string, resourceType: string, tenantId: string | undefined, outcome: BulkOutcome): Promise<void> {
  const auth = request.cycles.auth;
  const actorType = auth?.kind === 'admin' ? 'admin_on_behalf_of' : 'api_key';
  const r = outcome.response;
  return audit.write({
    tenant_id: tenantId || '__admin__',
    operation,
    resource_type: resourceType,
    resource_id: 'bulk-action',
    request_id: request.cycles.requestId,
    trace_id: request.cycles.traceId,
    status: 200,
    actor_type: actorType,
    source_ip: request.ip,
    metadata: {
      actor_type: actorType,
      action: r.action,
      idempotency_key: r.idempotency_key,
      total_matched: r.total_matched,
      succeeded: r.succeeded.length,
      failed: r.failed.length,
      skipped: r.skipped.length,
      replayed: outcome.replayed,
    },
  });
}

/** Bulk actions over tenants, budgets and webhook subscriptions (admin key only). */
export async function adminBulkRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { hooks, audit } = deps;
  const adminStore = deps.stores.admin;
  const listings = new AdminListingService(new ListingStore(adminStore.redis, adminStore.scripts, adminStore.keys), adminStore);
  const webhookStore = new WebhookStore(adminStore.redis, adminStore.scripts, adminStore.keys);
  const bulk = new BulkService(deps.admin, listings, new BulkStore(adminStore.redis, adminStore.keys), webhookStore);

  r.post('/v1/admin/tenants/bulk-action', {
    schema: { body: TenantBulkActionRequest },
    config: { operation: 'bulkActionTenants' },
    onRequest: hooks.admin(),
  }, async (request) => {
    // A CLOSE row runs the tenant's close cascade; each child it moves gets its audit row.
    const outcome = await bulk.tenants(request.cycles.auth!, request.body, request.cycles, {
      onCascade: (tenantId, report) => auditCascade(audit, request, tenantId, report),
    });
    await auditBulk(audit, request, 'bulkActionTenants', 'tenant', undefined, outcome);
    return outcome.response;
  });

  r.post('/v1/admin/budgets/bulk-action', {
    schema: { body: BudgetBulkActionRequest },
    config: { operation: 'bulkActionBudgets' },
    onRequest: hooks.admin(),
  }, async (request) => {
    const outcome = await bulk.budgets(request.cycles.auth!, request.body, request.cycles);
    await auditBulk(audit, request, 'bulkActionBudgets', 'budget', request.body.filter.tenant_id, outcome);
    return outcome.response;
  });

  r.post('/v1/admin/webhooks/bulk-action', {
    schema: { body: WebhookBulkActionRequest },
    config: { operation: 'bulkActionWebhooks' },
    onRequest: hooks.admin(),
  }, async (request) => {
    const outcome = await bulk.webhooks(request.cycles.auth!, request.body, request.cycles);
    await auditBulk(audit, request, 'bulkActionWebhooks', 'webhook', request.body.filter.tenant_id?.trim() || undefined, outcome);
    return outcome.response;
  });
}
