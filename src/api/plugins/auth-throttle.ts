import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { bounded } from './bounded.js';
import { CyclesError } from '../../domain/errors.js';

/**
 * Optional throttle of failed authentications (ADR 0016). Once a client IP has failed
 * authentication `limit` times in the current fixed 60 s window, every further request from it
 * that needs credentials gets 429 LIMIT_EXCEEDED with Retry-After, before any key is checked,
 * until the window ends. Counters live in Redis so all instances share them. If Redis fails or
 * is slow, the throttle steps aside (fail open): it must never take the admin plane down.
 */
export interface AuthFailureCounter {
  count(ip: string, window: number): Promise<number>;
  record(ip: string, window: number, ttlMs: number): Promise<number>;
}

export interface AuthThrottleOptions {
  /** Failures per IP per window before requests are refused; 0 turns the throttle off. */
  limit: number;
  counter: AuthFailureCounter;
  /** Epoch milliseconds; injectable so a test can place itself inside a window. */
  now?: () => number;
}

export const AUTH_FAILURE_WINDOW_MS = 60_000;
/** Bound on one counter read or write; past it the request goes on as if unthrottled. */
export const AUTH_THROTTLE_TIMEOUT_MS = 250;
/** Counters outlive their window by this much, so an instance whose clock lags still finds them. */
const COUNTER_SLACK_MS = 5_000;
/** Routes that need no credentials are never throttled (probes must keep working). */
const OPEN_OPERATIONS = new Set(['health', 'liveness', 'readiness']);

const throttled = new WeakSet<FastifyRequest>();

/** True when the throttle refused this request (such refusals write no audit row). */
export function wasThrottled(request: FastifyRequest): boolean {
  return throttled.has(request);
}

/** The client IP as one key, whether it arrived over IPv4 or as an IPv4-mapped IPv6 address. */
export function clientKey(ip: string | undefined): string {
  if (!ip) return 'unknown';
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

/** An authentication failure: 401/403 on a request that carries no authenticated identity. */
function isAuthFailure(request: FastifyRequest, reply: FastifyReply): boolean {
  return (reply.statusCode === 401 || reply.statusCode === 403) && request.cycles?.auth === undefined;
}

export function authFailureThrottle(app: FastifyInstance, opts: AuthThrottleOptions, logger: FastifyBaseLogger): void {
  if (opts.limit <= 0) return;
  const now = opts.now ?? Date.now;
  // One warning per window while the counter store fails, not one per request.
  let warnedWindow = -1;
  const onFailure = (err: unknown): void => {
    const window = Math.floor(now() / AUTH_FAILURE_WINDOW_MS);
    if (warnedWindow === window) return;
    warnedWindow = window;
    logger.warn({ err }, 'auth-failure throttle unavailable; requests are not throttled');
  };

  // A root hook: it runs after the correlation and CORS hooks and before every route's auth hook.
  app.addHook('onRequest', async (request, reply) => {
    if (request.method === 'OPTIONS' || OPEN_OPERATIONS.has(request.routeOptions.config?.operation ?? '')) return;
    const at = now();
    const window = Math.floor(at / AUTH_FAILURE_WINDOW_MS);
    const failures = await bounded(opts.counter.count(clientKey(request.ip), window), AUTH_THROTTLE_TIMEOUT_MS, 'auth-failure counter', onFailure);
    if (failures === undefined || failures < opts.limit) return;
    throttled.add(request);
    const windowEndMs = (window + 1) * AUTH_FAILURE_WINDOW_MS;
    reply.header('retry-after', String(Math.max(1, Math.ceil((windowEndMs - at) / 1000))));
    throw new CyclesError('LIMIT_EXCEEDED', 'Too many failed authentication attempts; retry later');
  });

  // Counted before the answer leaves, so a client's next request already sees the new count.
  app.addHook('onSend', async (request, reply, payload) => {
    if (!isAuthFailure(request, reply)) return payload;
    const at = now();
    const window = Math.floor(at / AUTH_FAILURE_WINDOW_MS);
    const ttlMs = (window + 1) * AUTH_FAILURE_WINDOW_MS - at + COUNTER_SLACK_MS;
    await bounded(opts.counter.record(clientKey(request.ip), window, ttlMs), AUTH_THROTTLE_TIMEOUT_MS, 'auth-failure counter', onFailure);
    return payload;
  });
}
