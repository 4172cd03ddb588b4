/** Who is calling: a tenant API key (with its permissions) or the operator's admin key. */
export type AuthContext =
  | { kind: 'tenant'; tenantId: string; keyId: string; permissions: readonly string[]; scopeFilter: readonly string[] }
  | { kind: 'admin' };

/** Request correlation carried into events and audit entries. */
export interface Correlation {
  requestId: string;
  traceId: string;
  /** Flags of a valid inbound W3C traceparent (absent: flags 01 on outbound webhooks). */
  traceFlags?: string;
  /** Groups the events of one logical action (e.g. a bulk action); stamped on each event. */
  correlationId?: string;
}

export function actorJson(auth: AuthContext, sourceIp?: string): string {
  if (auth.kind === 'admin') return JSON.stringify({ type: 'admin', ...(sourceIp ? { source_ip: sourceIp } : {}) });
  return JSON.stringify({ type: 'api_key', key_id: auth.keyId, ...(sourceIp ? { source_ip: sourceIp } : {}) });
}

/** Runtime permissions (Permission enum). admin:read / admin:write are wildcards of their kind. */
export function hasPermission(permissions: readonly string[], needed: string): boolean {
  if (permissions.includes(needed)) return true;
  if (needed.endsWith(':read') && permissions.includes('admin:read')) return true;
  if (needed.endsWith(':write') && permissions.includes('admin:write')) return true;
  return false;
}

/** The trace id handed to event-emitting scripts: `<trace id>-<flags>` when a traceparent set flags. */
export function eventTraceId(corr: Correlation): string {
  return corr.traceFlags === undefined ? corr.traceId : `${corr.traceId}-${corr.traceFlags}`;
}
