import { Redis } from 'ioredis';

/**
 * Connects to Redis. Auto-pipelining batches the commands issued in the same event-loop tick
 * into one write, which is what lets many concurrent requests share one connection cheaply.
 * Commands fail fast (no offline queue) once the connection is known to be down, so requests get
 * a clear 503 instead of hanging while Redis is away.
 */
export function createRedis(url: string, name: string): Redis {
  return new Redis(url, {
    connectionName: name,
    enableAutoPipelining: true,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: true,
    // A script whose reply was lost with the connection is not re-sent blindly: the client gets
    // an error and retries with its idempotency key, so nothing is applied twice.
    autoResendUnfulfilledCommands: false,
    connectTimeout: 5000,
    retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 6), 2000),
    lazyConnect: false,
  });
}

/** A URL with any password replaced, for logs. */
export function redactRedisUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'redis://<unparseable>';
  }
}
