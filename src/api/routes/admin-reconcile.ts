import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { AdminDeps } from '../admin-app.js';
import { auditSuccess } from '../plugins/audit-success.js';
import { CyclesError } from '../../domain/errors.js';
import { PipelineStore } from '../../store/pipeline-store.js';

/** ACTIVE reservations above which a repair is refused (the script reads all of them). */
const REPAIR_MAX_RESERVATIONS = 50_000;

const ReconcileQuery = Type.Object({
  tenant_id: Type.String({ pattern: '^[a-z0-9-]{1,64}$' }),
  scope: Type.String({ minLength: 1, maxLength: 1024 }),
  unit: Type.String({ minLength: 1, maxLength: 64 }),
}, { additionalProperties: false });

/**
 * The explicit repair the reconciliation runbook names (ADR 0014): reconciliation only reports a
 * ledger whose `reserved` disagrees with its ACTIVE reservations; an operator repairs it here,
 * audited, after finding the cause. Not part of the protocol (an extension of this server).
 */
export async function adminReconcileRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const admin = deps.stores.admin;
  const store = new PipelineStore(admin.redis, admin.scripts, admin.keys);

  r.post('/v1/admin/budgets/reconcile-reserved', {
    schema: { querystring: ReconcileQuery },
    config: { operation: 'reconcileBudgetReserved' },
    onRequest: deps.hooks.admin(),
  }, async (request) => {
    const { tenant_id: tenantId, scope, unit } = request.query;
    const out = await store.repairReserved(tenantId, scope, unit, REPAIR_MAX_RESERVATIONS);
    if (out.result === 'BUDGET_NOT_FOUND') throw new CyclesError('BUDGET_NOT_FOUND', `Budget not found: ${scope} (${unit})`);
    if (out.result === 'SKIPPED') {
      throw new CyclesError('INVALID_REQUEST', `Tenant has ${out.count} ACTIVE reservations; repair is limited to ${REPAIR_MAX_RESERVATIONS}`);
    }
    await auditSuccess(deps.audit, request, {
      operation: 'reconcileBudgetReserved', resourceType: 'budget', resourceId: `${scope}|${unit}`, tenantId, status: 200,
    });
    return { tenant_id: tenantId, scope, unit, previous_reserved: out.before, reserved: out.after, changed: out.before !== out.after };
  });
}
