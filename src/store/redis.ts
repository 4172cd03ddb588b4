import { Redis } from 'ioredis';
import type { Logger } from 'pino';

/**
 * Connects to Redis. Auto-pipelining batches the commands issued in the same event-loop tick
 * into one write, which is what lets many concurrent requests share one connection cheaply.
 * While Redis is away a command waits for at most one reconnect attempt (maxRetriesPerRequest 1,
 * reconnect backoff capped at 2 s) and then fails, so a request gets a clear 503 within seconds
 * instead of hanging. Connection errors go to the logger, once per outage.
 */
export function createRedis(url: string, name: string, logger?: Logger): Redis {
  const client = new Redis(url, {
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
  let down = false;
  client.on('error', (err: Error) => {
    if (down) return;
    down = true;
    logger?.error({ err: { message: err.message }, connection: name }, 'Redis connection error; retrying');
  });
  client.on('ready', () => {
    if (down) logger?.info({ connection: name }, 'Redis connection restored');
    down = false;
  });
  return client;
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
