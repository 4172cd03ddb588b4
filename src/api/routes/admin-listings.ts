import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { AdminListingService } from '../../domain/admin-listings.js';
import { ListingStore } from '../../store/listing-store.js';
import { KeyIdParams } from '../schemas/admin.js';
import {
  AdminBalanceQuery,
  ApiKeyListQuery,
  ApiKeyUpdateRequest,
  ApiKeyValidationRequest,
  BudgetListQuery,
  TenantListQuery,
} from '../schemas/admin-listings.js';
import type { AdminDeps } from '../admin-app.js';

/** Governance listings: tenants, budgets, API keys, admin-plane balances, key update and validation. */
export async function adminListingRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { hooks, audit } = deps;
  const adminStore = deps.stores.admin;
  const listings = new AdminListingService(new ListingStore(adminStore.redis, adminStore.scripts, adminStore.keys), adminStore);

  /** One success audit row per mutation (admin digest §2.8), shaped as the other admin routes write it. */
  const audited = async (request: FastifyRequest, operation: string, resourceType: string, resourceId: string, tenantId: string, status: number) => {
    const actorType = request.cycles.auth?.kind === 'admin' ? 'admin_on_behalf_of' : 'api_key';
    await audit.write({
      tenant_id: tenantId || '__admin__',
      operation,
      resource_type: resourceType,
      resource_id: resourceId,
      request_id: request.cycles.requestId,
      trace_id: request.cycles.traceId,
      status,
      actor_type: actorType,
      source_ip: request.ip,
      metadata: { actor_type: actorType },
    });
  };

  r.get('/v1/admin/tenants', {
    schema: { querystring: TenantListQuery },
    config: { operation: 'listTenants' },
    onRequest: hooks.admin(),
  }, async (request) => listings.listTenants(request.query));

  r.get('/v1/admin/budgets', {
    schema: { querystring: BudgetListQuery },
    config: { operation: 'listBudgets' },
    onRequest: hooks.tenantOrAdmin('budgets:read'),
  }, async (request) => listings.listBudgets(request.cycles.auth!, request.query));

  r.get('/v1/balances', {
    schema: { querystring: AdminBalanceQuery },
    config: { operation: 'getBalances' },
    onRequest: hooks.tenant('balances:read'),
  }, async (request) => listings.balances(request.cycles.auth!, request.query));

  r.get('/v1/admin/api-keys', {
    schema: { querystring: ApiKeyListQuery },
    config: { operation: 'listApiKeys' },
    onRequest: hooks.admin(),
  }, async (request) => listings.listApiKeys(request.query));

  r.patch('/v1/admin/api-keys/:key_id', {
    schema: { params: KeyIdParams, body: ApiKeyUpdateRequest },
    config: { operation: 'updateApiKey' },
    onRequest: hooks.admin(),
  }, async (request) => {
    const { tenantId, key } = await listings.updateApiKey(request.params.key_id, request.body);
    await audited(request, 'updateApiKey', 'api_key', request.params.key_id, tenantId, 200);
    return key;
  });

  r.post('/v1/auth/validate', {
    schema: { body: ApiKeyValidationRequest },
    config: { operation: 'validateApiKey' },
    onRequest: hooks.admin(),
  }, async (request) => listings.validateKey(request.body.key_secret));
}
