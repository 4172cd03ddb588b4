import type { FastifyRequest } from 'fastify';
import type { AuditLog } from '../../domain/audit.js';

export interface SuccessRow {
  operation: string;
  resourceType: string;
  resourceId: string;
  /** The owning tenant; absent for operations that have none (filed under `__admin__`). */
  tenantId: string | undefined;
  status: number;
}

/**
 * The one success audit row a governance mutation writes (admin digest §2.8): who acted (key id
 * for a tenant key; `admin_on_behalf_of` for the admin key), on what, with the request's ids.
 */
export function auditSuccess(audit: AuditLog, request: FastifyRequest, row: SuccessRow): Promise<void> {
  const auth = request.cycles.auth;
  const actorType = auth?.kind === 'admin' ? 'admin_on_behalf_of' : 'api_key';
  return audit.write({
    tenant_id: row.tenantId || '__admin__',
    ...(auth?.kind === 'tenant' ? { key_id: auth.keyId } : {}),
    operation: row.operation,
    resource_type: row.resourceType,
    resource_id: row.resourceId,
    request_id: request.cycles.requestId,
    trace_id: request.cycles.traceId,
    status: row.status,
    actor_type: actorType,
    source_ip: request.ip,
    metadata: { actor_type: actorType },
  });
}
