import { CyclesError } from './errors.js';

/** Opaque cursors: base64url JSON. A cursor that does not decode is a client error. */
export function encodeCursor(value: unknown): string {
  return Buffer.from(JSON.stringify(value), 'utf8').toString('base64url');
}

export function decodeCursor<T>(cursor: string): T {
  try {
    const parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (parsed === null || typeof parsed !== 'object') throw new Error('not an object');
    return parsed as T;
  } catch {
    throw new CyclesError('INVALID_REQUEST', 'cursor is not valid; restart pagination without a cursor');
  }
}
