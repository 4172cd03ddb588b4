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

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** `n` random base62 characters (rejection sampling, so every character is equally likely). */
function randomBase62(n: number): string {
  let out = '';
  while (out.length < n) {
    const hex = randomHex(16);
    for (let i = 0; i < hex.length && out.length < n; i += 2) {
      const b = parseInt(hex.slice(i, i + 2), 16);
      if (b < 248) out += BASE62[b % 62];
    }
  }
  return out;
}

/**
 * Server-generated identifiers. A reservation id carries its tenant
 * (`rsv_<tenant>_<short>`) so that commit, release, extend and get can find the tenant's hash
 * slot without a lookup round trip, and an admin key (which has no tenant) can still address it.
 * Tenant ids are `[a-z0-9-]`, so the last `_` separates tenant and short id unambiguously. The
 * short id names the record inside the tenant (ADR 0019): 12 base62 characters (71 bits; the
 * reserve script refuses a short id already in use and a new one is drawn), or 24 hex characters
 * for reservations created before ADR 0019.
 */
export function reservationIdOf(tenantId: string, shortId: string): string {
  return `rsv_${tenantId}_${shortId}`;
}

/** A fresh short id: what a reserve stores the record under (the tail of its public id). */
export function newReservationShortId(): string {
  return randomBase62(12);
}

const SHORT_ID = /^(?:[0-9A-Za-z]{12}|[0-9a-f]{24})$/;

/** The owning tenant and the short id of a well-formed reservation id; undefined otherwise. */
export function parseReservationId(reservationId: string): { tenant: string; short: string } | undefined {
  if (!reservationId.startsWith('rsv_')) return undefined;
  const last = reservationId.lastIndexOf('_');
  if (last <= 4) return undefined;
  const tenant = reservationId.slice(4, last);
  const short = reservationId.slice(last + 1);
  if (!/^[a-z0-9-]{1,64}$/.test(tenant) || !SHORT_ID.test(short)) return undefined;
  return { tenant, short };
}

/** The record name of a reservation inside its tenant (the random tail of its id). */
export function shortOfReservationId(reservationId: string): string | undefined {
  return parseReservationId(reservationId)?.short;
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
