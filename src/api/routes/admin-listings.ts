import type { FastifyInstance } from 'fastify';
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
import { auditSuccess } from '../plugins/audit-success.js';

/** Governance listings: tenants, budgets, API keys, admin-plane balances, key update and validation. */
export async function adminListingRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const { hooks, audit } = deps;
  const adminStore = deps.stores.admin;
  const listings = new AdminListingService(new ListingStore(adminStore.redis, adminStore.scripts, adminStore.keys), adminStore);


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
    const { tenantId, key } = await listings.updateApiKey(request.params.key_id, request.body, (tenant, data) =>
      deps.admin.emitApiKeyEvent({ auth: request.cycles.auth!, corr: request.cycles }, tenant, 'api_key.permissions_changed', data));
    await auditSuccess(audit, request, {
      operation: 'updateApiKey',
      resourceType: 'api_key',
      resourceId: request.params.key_id, tenantId,
      status: 200,
    });
    return key;
  });

  r.post('/v1/auth/validate', {
    schema: { body: ApiKeyValidationRequest },
    config: { operation: 'validateApiKey' },
    onRequest: hooks.admin(),
  }, async (request) => listings.validateKey(request.body.key_secret));
}
