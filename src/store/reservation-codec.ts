import { createHash } from 'node:crypto';

/**
 * Reservation records as the scripts store them (ADR 0019, src/lua/includes/reservation.lua):
 * one field of P:{t}:rs per reservation, valued by a MessagePack map with one-letter keys. This
 * file decodes that map back to the long field names the rest of the code reads.
 */

/**
 * Decodes the MessagePack subset Redis's cmsgpack writes for a record (maps, arrays, strings,
 * numbers, booleans, nil). A truncated value, trailing bytes or an unknown type byte throw.
 */
export function decodeMsgpack(buf: Buffer): unknown {
  let pos = 0;
  const need = (n: number) => {
    if (pos + n > buf.length) throw new Error(`truncated MessagePack value: ${n} bytes wanted at ${pos} of ${buf.length}`);
  };
  const u8 = () => {
    need(1);
    return buf[pos++]!;
  };
  const str = (n: number) => {
    need(n);
    const s = buf.toString('utf8', pos, pos + n);
    pos += n;
    return s;
  };
  const map = (n: number) => {
    const out: Record<string, unknown> = {};
    for (let i = 0; i < n; i += 1) {
      const k = read();
      out[String(k)] = read();
    }
    return out;
  };
  const arr = (n: number) => {
    const out: unknown[] = [];
    for (let i = 0; i < n; i += 1) out.push(read());
    return out;
  };
  const read = (): unknown => {
    const b = u8();
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if ((b & 0xf0) === 0x80) return map(b & 0x0f);
    if ((b & 0xf0) === 0x90) return arr(b & 0x0f);
    if ((b & 0xe0) === 0xa0) return str(b & 0x1f);
    let v: number;
    need({ 0xca: 4, 0xcb: 8, 0xcd: 2, 0xce: 4, 0xcf: 8, 0xd1: 2, 0xd2: 4, 0xd3: 8, 0xda: 2, 0xdb: 4, 0xdc: 2, 0xdd: 4, 0xde: 2, 0xdf: 4 }[b] ?? 0);
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xca: v = buf.readFloatBE(pos); pos += 4; return v;
      case 0xcb: v = buf.readDoubleBE(pos); pos += 8; return v;
      case 0xcc: return u8();
      case 0xcd: v = buf.readUInt16BE(pos); pos += 2; return v;
      case 0xce: v = buf.readUInt32BE(pos); pos += 4; return v;
      case 0xcf: v = Number(buf.readBigUInt64BE(pos)); pos += 8; return v;
      case 0xd0: v = buf.readInt8(pos); pos += 1; return v;
      case 0xd1: v = buf.readInt16BE(pos); pos += 2; return v;
      case 0xd2: v = buf.readInt32BE(pos); pos += 4; return v;
      case 0xd3: v = Number(buf.readBigInt64BE(pos)); pos += 8; return v;
      case 0xd9: return str(u8());
      case 0xda: v = buf.readUInt16BE(pos); pos += 2; return str(v);
      case 0xdb: v = buf.readUInt32BE(pos); pos += 4; return str(v);
      case 0xdc: v = buf.readUInt16BE(pos); pos += 2; return arr(v);
      case 0xdd: v = buf.readUInt32BE(pos); pos += 4; return arr(v);
      case 0xde: v = buf.readUInt16BE(pos); pos += 2; return map(v);
      case 0xdf: v = buf.readUInt32BE(pos); pos += 4; return map(v);
      default: throw new Error(`unsupported MessagePack byte 0x${b.toString(16)} at ${pos - 1}`);
    }
  };
  const value = read();
  if (pos !== buf.length) throw new Error(`MessagePack value has ${buf.length - pos} trailing bytes`);
  return value;
}

/** Long field name of each one-letter code (the inverse of RES_CODES in reservation.lua). */
const NAMES: Record<string, string> = {
  s: 'status', a: 'action', u: 'unit', e: 'estimate', m: 'mask', c: 'created', g: 'grace',
  n: 'ext', k: 'idem', h: 'hash', j: 'subject', d: 'meta',
  C: 'committed', f: 'finalized', K: 'ckey', H: 'chash', R: 'cres', D: 'cmeta',
  L: 'rkey', M: 'rhash', N: 'rres', W: 'reason', X: 'expired_at',
};
const POLICIES: Record<string, string> = { R: 'REJECT', A: 'ALLOW_IF_AVAILABLE', O: 'ALLOW_WITH_OVERDRAFT' };
const SUBJECT_LEVELS = ['tenant', 'workspace', 'app', 'workflow', 'agent', 'toolset'];

const text = (v: unknown): string => (typeof v === 'number' ? v.toFixed(0) : String(v));

/**
 * The subject a scope path stands for, when it can be rebuilt from it: every level present with
 * the value as the path spells it (lower-cased, trimmed). The reserve script stores the subject
 * only when this would not give it back.
 */
export function subjectFromScopePath(scopePath: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const seg of scopePath.split('/')) {
    const colon = seg.indexOf(':');
    if (colon > 0) out[seg.slice(0, colon)] = seg.slice(colon + 1);
  }
  return out;
}

/**
 * Whether `subject` is exactly what subjectFromScopePath(scopePath) gives back, key order
 * included (so a read returns the subject as it was sent, byte for byte).
 */
export function subjectIsDerivable(subject: Record<string, unknown>, scopePath: string): boolean {
  const derived = subjectFromScopePath(scopePath);
  const keys = Object.keys(subject);
  const order = Object.keys(derived);
  if (keys.length !== order.length) return false;
  return keys.every((k, i) => k === order[i] && SUBJECT_LEVELS.includes(k) && subject[k] === derived[k]);
}

/**
 * A decoded record with the long names (tenant, scope_path, expires, policy and subject rebuilt),
 * every value as a string, as the reservation views read it.
 */
export function decodeReservation(tenantId: string, value: Buffer): Record<string, string> {
  const raw = decodeMsgpack(value) as Record<string, unknown>;
  const out: Record<string, string> = { tenant: tenantId };
  for (const [code, v] of Object.entries(raw)) {
    const name = NAMES[code];
    if (name !== undefined && v !== null && v !== undefined) out[name] = text(v);
  }
  const head = `tenant:${tenantId}`;
  out.scope_path = typeof raw.P === 'string' ? raw.P : raw.p ? `${head}/${String(raw.p)}` : head;
  out.expires = text(Number(raw.c ?? 0) + Number(raw.x ?? 0));
  out.policy = POLICIES[String(raw.o)] ?? String(raw.o ?? 'ALLOW_IF_AVAILABLE');
  if (out.subject === undefined) out.subject = JSON.stringify(subjectFromScopePath(out.scope_path));
  return out;
}

/** The P:{t}:ik field of an idempotency key: 72 bits of its SHA-1 in base64url (idem_field in Lua). */
export function idempotencyField(idempotencyKey: string): string {
  return createHash('sha1').update(idempotencyKey, 'utf8').digest().subarray(0, 9).toString('base64url');
}
