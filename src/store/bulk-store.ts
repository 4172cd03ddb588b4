import type { Keys } from './keys.js';
import type { RedisClient } from './scripts.js';

/** What the idempotency record of one bulk action holds: a claim, then the stored response. */
export interface BulkIdempotencyRecord {
  /** Payload hash of the request that claimed the key. */
  h: string;
  /** Claim token, so only the claimer releases its own claim. */
  t: string;
  s: 'pending' | 'done';
  /** The response envelope, once done. */
  r?: unknown;
}

/** Idempotency records of the bulk actions (admin digest §2.11), one string key each. */
export class BulkStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
  ) {}

  /** Claims the key atomically (SET NX); false when a record already exists. */
  async claim(endpoint: string, key: string, rec: BulkIdempotencyRecord, ttlMs: number): Promise<boolean> {
    const ok = await this.redis.set(this.keys.bulkIdempotency(endpoint, key), JSON.stringify(rec), 'PX', ttlMs, 'NX');
    return ok === 'OK';
  }

  async get(endpoint: string, key: string): Promise<BulkIdempotencyRecord | undefined> {
    const raw = await this.redis.get(this.keys.bulkIdempotency(endpoint, key));
    return raw === null ? undefined : (JSON.parse(raw) as BulkIdempotencyRecord);
  }

  /** Replaces the claim with the finished record; the replay window starts now. */
  async complete(endpoint: string, key: string, rec: BulkIdempotencyRecord, ttlMs: number): Promise<void> {
    await this.redis.set(this.keys.bulkIdempotency(endpoint, key), JSON.stringify(rec), 'PX', ttlMs);
  }

  /**
   * Drops a pending claim so the same key can be retried. Read-then-delete: the only writer that
   * could interleave is the claimer itself, which is the caller.
   */
  async release(endpoint: string, key: string, token: string): Promise<void> {
    const rec = await this.get(endpoint, key);
    if (rec && rec.t === token && rec.s === 'pending') await this.redis.del(this.keys.bulkIdempotency(endpoint, key));
  }
}
