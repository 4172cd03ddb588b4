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
