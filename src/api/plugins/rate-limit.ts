import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { bounded } from './bounded.js';
import { CyclesError } from '../../domain/errors.js';
import type { BucketLimit, RateLimitResult } from '../../store/rate-limit-store.js';

/**
 * Per-tenant and per-key request rate limits of the runtime plane (ADR 0017), off by default.
 * Every request made with a tenant API key takes one token from its tenant's bucket and one from
 * its key's bucket, atomically in Redis, so every instance shares the same buckets. Requests with
 * the admin key, health probes, metrics and the public endpoints carry no tenant identity and
 * are never limited.
 *
 * A refusal answers 429 LIMIT_EXCEEDED before the body is read or any domain call is made, so it
 * changes nothing: no ledger change, no idempotency record, no event. If Redis fails or does not
 * answer within RATE_LIMIT_TIMEOUT_MS, the request goes on unlimited (fail open) and keeps the
 * "not enforced" sentinel headers.
 */
export interface RateLimiter {
  take(tenantId: string, keyId: string, tenant: BucketLimit, key: BucketLimit): Promise<RateLimitResult>;
}

export interface RuntimeRateLimitOptions {
  /** Requests per second per tenant, all its keys together; 0 = no tenant limit. */
  tenantPerSecond: number;
  /** Requests per second per API key; 0 = no key limit. */
  keyPerSecond: number;
  /** Bucket capacity in seconds of the rate: a bucket holds max(1, rate × burst) requests. */
  burst: number;
  limiter: RateLimiter;
  /** Called once per refused request with the refusing bucket (metrics). */
  onLimited?: (scope: 'tenant' | 'key') => void;
  /** Bound on one limiter call before failing open; tests shorten or lengthen it. */
  timeoutMs?: number;
}

/** Bound on one limiter call; past it the request goes on as if no limit were configured. */
export const RATE_LIMIT_TIMEOUT_MS = 100;
/** While the limiter fails, one warning per this period, not one per request. */
const WARN_INTERVAL_MS = 60_000;

/** A bucket's size: `burst` seconds of its rate, never less than one request. */
export function bucketCapacity(ratePerSecond: number, burst: number): number {
  return Math.max(1, Math.floor(ratePerSecond * burst));
}


export function runtimeRateLimit(app: FastifyInstance, opts: RuntimeRateLimitOptions, logger: FastifyBaseLogger): void {
  if (opts.tenantPerSecond <= 0 && opts.keyPerSecond <= 0) return;
  const tenant: BucketLimit = { ratePerSecond: opts.tenantPerSecond, capacity: bucketCapacity(opts.tenantPerSecond, opts.burst) };
  const key: BucketLimit = { ratePerSecond: opts.keyPerSecond, capacity: bucketCapacity(opts.keyPerSecond, opts.burst) };
  const timeoutMs = opts.timeoutMs ?? RATE_LIMIT_TIMEOUT_MS;
  let warnedAtMs = -Infinity;
  const onFailure = (err: unknown): void => {
    const now = Date.now();
    if (now - warnedAtMs < WARN_INTERVAL_MS) return;
    warnedAtMs = now;
    logger.warn({ err }, 'rate limiter unavailable; runtime requests are not rate limited');
  };

  // preParsing runs after every onRequest hook, so the route's auth hook has named the caller,
  // and before the body is read: a refused request costs one script call and nothing else.
  app.addHook('preParsing', async (request, reply, payload) => {
    const auth = request.cycles?.auth;
    if (auth?.kind !== 'tenant') return payload;
    const result = await bounded(opts.limiter.take(auth.tenantId, auth.keyId, tenant, key), timeoutMs, 'rate limiter', onFailure);
    if (result === undefined || result.scope === '') return payload;
    reply.header('x-ratelimit-limit', String(result.capacity));
    reply.header('x-ratelimit-remaining', String(result.remaining));
    reply.header('x-ratelimit-reset', String(Math.ceil(result.fullAtMs / 1000)));
    if (result.allowed) return payload;
    const retryAfterS = Math.max(1, Math.ceil(result.retryAfterMs / 1000));
    reply.header('retry-after', String(retryAfterS));
    opts.onLimited?.(result.scope);
    const [who, rate] = result.scope === 'tenant' ? ['tenant', opts.tenantPerSecond] : ['API key', opts.keyPerSecond];
    throw new CyclesError('LIMIT_EXCEEDED', `Rate limit of ${rate} requests per second for this ${who} exceeded; retry after ${retryAfterS} s`);
  });
}
