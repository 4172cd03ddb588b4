import type { Keys } from './keys.js';
import type { Scripts } from './scripts.js';

/** One bucket's settings: `ratePerSecond` 0 means that bucket is not limited. */
export interface BucketLimit {
  ratePerSecond: number;
  capacity: number;
}

/** The outcome of one rate-limit check, with the figures of the bucket that matters most. */
export interface RateLimitResult {
  allowed: boolean;
  /** The bucket the figures describe ('' when neither bucket is limited). */
  scope: 'tenant' | 'key' | '';
  capacity: number;
  remaining: number;
  /** When that bucket is full again (epoch ms, Redis clock). */
  fullAtMs: number;
  /** On a refusal: how long until both buckets have a token. */
  retryAfterMs: number;
}

/**
 * Request rate limits of the runtime plane (ADR 0017): one `rate-limit` script call checks the
 * tenant's bucket and the API key's bucket together and takes a token from both or neither.
 * Both keys live in the tenant's slot, so the call is atomic on Redis Cluster too.
 */
export class RateLimitStore {
  constructor(
    private readonly scripts: Scripts,
    private readonly keys: Keys,
  ) {}

  async take(tenantId: string, keyId: string, tenant: BucketLimit, key: BucketLimit): Promise<RateLimitResult> {
    const reply = await this.scripts.run(
      'rate-limit',
      [this.keys.rateLimitTenant(tenantId), this.keys.rateLimitKey(tenantId, keyId)],
      [tenant.ratePerSecond, tenant.capacity, key.ratePerSecond, key.capacity],
    );
    const scope = String(reply[1]);
    return {
      allowed: reply[0] === 'OK',
      scope: scope === 'tenant' || scope === 'key' ? scope : '',
      capacity: Number(reply[2]),
      remaining: Number(reply[3]),
      fullAtMs: Number(reply[4]),
      retryAfterMs: Number(reply[5]),
    };
  }
}
