import type { RedisClient } from './redis.js';
import type { Keys } from './keys.js';

/**
 * Counters of failed authentications per client IP and fixed window (ADR 0016). They live in
 * Redis so every instance behind a load balancer sees the same count; each counter is one key
 * that expires with its window, so nothing needs sweeping.
 */
export class AuthFailureStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
  ) {}

  /** Failures recorded so far for `ip` in `window`. */
  async count(ip: string, window: number): Promise<number> {
    const raw = await this.redis.get(this.keys.authFailures(ip, window));
    return raw === null ? 0 : Number(raw);
  }

  /**
   * Adds one failure and (re)sets the counter's lifetime in one MULTI, so a counter never
   * outlives its window even if the client stops right after the INCR. Returns the new count.
   */
  async record(ip: string, window: number, ttlMs: number): Promise<number> {
    const key = this.keys.authFailures(ip, window);
    const replies = await this.redis.multi().incr(key).pexpire(key, ttlMs).exec();
    const [err, value] = replies?.[0] ?? [new Error('MULTI was discarded'), null];
    if (err) throw err;
    return Number(value);
  }
}
