import { createHash } from 'node:crypto';

/**
 * Canonical JSON (RFC 8785 style for the values a request can hold: objects with keys sorted by
 * code unit, arrays in order, JSON numbers and strings as JSON.stringify renders them), so a
 * replay with reordered keys or other whitespace counts as the same payload.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}

export function payloadHash(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value)).digest('base64url');
}
