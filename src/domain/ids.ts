import { randomFillSync } from 'node:crypto';

/**
 * Random bytes come from a pooled buffer refilled 4 KiB at a time: one getrandom call serves
 * hundreds of ids, where a randomBytes call per id was a measurable share of request CPU.
 */
const POOL_SIZE = 4096;
const pool = Buffer.allocUnsafe(POOL_SIZE);
let poolOffset = POOL_SIZE;

function randomHex(bytes: number): string {
  if (poolOffset + bytes > POOL_SIZE) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const hex = pool.toString('hex', poolOffset, poolOffset + bytes);
  poolOffset += bytes;
  return hex;
}

/**
 * Server-generated identifiers. A reservation id carries its tenant
 * (`rsv_<tenant>_<24 hex>`) so that commit, release, extend and get can find the tenant's hash
 * slot without a lookup round trip, and an admin key (which has no tenant) can still address it.
 * Tenant ids are `[a-z0-9-]`, so the last `_` separates tenant and random part unambiguously.
 */
export function newReservationId(tenantId: string): string {
  return `rsv_${tenantId}_${randomHex(12)}`;
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
  return `evt_${randomHex(7)}`;
}

export function newId(prefix: string, bytes = 8): string {
  return `${prefix}_${randomHex(bytes)}`;
}

export function newTraceId(): string {
  for (;;) {
    const id = randomHex(16);
    if (id !== '0'.repeat(32)) return id;
  }
}

/** Request ids: a random per-process prefix and a counter, unique across instances and cheap. */
const requestIdPrefix = `req_${randomHex(8)}`;
let requestCounter = 0;

export function newRequestId(): string {
  requestCounter = (requestCounter + 1) % Number.MAX_SAFE_INTEGER;
  return `${requestIdPrefix}${requestCounter.toString(16).padStart(8, '0')}`;
}
