import { randomBytes } from 'node:crypto';

/**
 * Server-generated identifiers. A reservation id carries its tenant
 * (`rsv_<tenant>_<24 hex>`) so that commit, release, extend and get can find the tenant's hash
 * slot without a lookup round trip, and an admin key (which has no tenant) can still address it.
 * Tenant ids are `[a-z0-9-]`, so the last `_` separates tenant and random part unambiguously.
 */
export function newReservationId(tenantId: string): string {
  return `rsv_${tenantId}_${randomBytes(12).toString('hex')}`;
}

export function tenantOfReservationId(reservationId: string): string | undefined {
  if (!reservationId.startsWith('rsv_')) return undefined;
  const last = reservationId.lastIndexOf('_');
  if (last <= 4) return undefined;
  const tenant = reservationId.slice(4, last);
  const random = reservationId.slice(last + 1);
  if (!/^[a-z0-9-]{1,64}$/.test(tenant) || !/^[0-9a-f]{24}$/.test(random)) return undefined;
  return tenant;
}

/** Base for the event ids a script may emit: `evt_<base>` + a per-event suffix added in Lua. */
export function newEventIdBase(): string {
  return `evt_${randomBytes(10).toString('hex')}`;
}

export function newId(prefix: string, bytes = 8): string {
  return `${prefix}_${randomBytes(bytes).toString('hex')}`;
}

export function newTraceId(): string {
  for (;;) {
    const id = randomBytes(16).toString('hex');
    if (id !== '0'.repeat(32)) return id;
  }
}

export function newRequestId(): string {
  return `req_${randomBytes(12).toString('hex')}`;
}
