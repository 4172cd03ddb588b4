import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';

/** One address of a Sentinel or of a Cluster seed node. */
export interface HostPort {
  host: string;
  port: number;
}

/**
 * Where Redis is and how to authenticate (ADR 0018). Built from config by the CLI (or by a test);
 * every connection of a process — commands, pub/sub, BullMQ — comes from it through createRedis.
 *
 *   standalone  one node: `redis://` or `rediss://` (TLS) URL with optional user:password and db;
 *               `password`/`username` fill in what the URL does not carry
 *   sentinel    the master named `masterName`, discovered through `sentinels` (which may need
 *               `sentinelPassword`); the data nodes use `username`/`password`/`tls`/`db`
 *   cluster     seed nodes of a Redis Cluster; every node uses `username`/`password`/`tls`
 */
export type RedisSpec =
  | { mode: 'standalone'; url: string; username?: string | undefined; password?: string | undefined }
  | {
      mode: 'sentinel';
      sentinels: HostPort[];
      masterName: string;
      sentinelPassword?: string | undefined;
      username?: string | undefined;
      password?: string | undefined;
      tls?: boolean | undefined;
      db?: number | undefined;
    }
  | { mode: 'cluster'; nodes: HostPort[]; username?: string | undefined; password?: string | undefined; tls?: boolean | undefined };

export type RedisClient = Redis | Cluster;

/**
 * What a connection is for.
 *   command  the shared connection of stores and scripts: auto-pipelined, fails a command after
 *            one reconnect attempt so a request gets a 503 within seconds instead of hanging
 *   queue    BullMQ (queues, workers and their blocking duplicates): maxRetriesPerRequest null as
 *            BullMQ requires, no auto-pipelining (blocking commands would stall the batch)
 */
export type ConnectionRole = 'command' | 'queue';

/** Connect timeout of every connection. */
const CONNECT_TIMEOUT_MS = 5000;
/** Reconnect backoff: 50 ms × 2^n, at most this long. */
const RECONNECT_BACKOFF_CAP_MS = 2000;
const reconnectDelay = (attempt: number) => Math.min(50 * 2 ** Math.min(attempt, 6), RECONNECT_BACKOFF_CAP_MS);

function roleOptions(role: ConnectionRole): RedisOptions {
  if (role === 'queue') return { maxRetriesPerRequest: null, enableReadyCheck: true };
  return {
    maxRetriesPerRequest: 1,
    // A script whose reply was lost with the connection is not re-sent blindly: the client gets
    // an error and retries with its idempotency key, so nothing is applied twice.
    autoResendUnfulfilledCommands: false,
  };
}

/**
 * Connects to Redis in any topology. Auto-pipelining (command role) batches the commands issued
 * in the same event-loop tick into one write per node, which is what lets many concurrent
 * requests share one connection cheaply; on Cluster, ioredis groups the batch by the node that
 * owns each command's first key (scripts are sent as EVALSHA so their first key is known, see
 * scripts.ts). While Redis is away a command waits for at most one reconnect attempt
 * (reconnect backoff capped at 2 s) and then fails. Connection errors go to the logger, once per
 * outage, as a message only (an ioredis error may carry command arguments).
 */
export function createRedis(spec: RedisSpec | string, name: string, logger?: Logger, role: ConnectionRole = 'command'): RedisClient {
  const s: RedisSpec = typeof spec === 'string' ? { mode: 'standalone', url: spec } : spec;
  const base: RedisOptions = {
    connectionName: name,
    connectTimeout: CONNECT_TIMEOUT_MS,
    enableOfflineQueue: true,
    lazyConnect: false,
    ...roleOptions(role),
    ...(s.username ? { username: s.username } : {}),
    ...(s.password ? { password: s.password } : {}),
  };
  let client: RedisClient;
  if (s.mode === 'cluster') {
    const { retryStrategy: _unused, enableOfflineQueue: _offline, ...nodeOptions } = base;
    const options: ClusterOptions = {
      redisOptions: { ...nodeOptions, ...(s.tls ? { tls: {} } : {}) },
      enableOfflineQueue: true,
      enableAutoPipelining: role === 'command',
      scaleReads: 'master',
      clusterRetryStrategy: (attempt) => reconnectDelay(attempt),
      // Failovers and resharding answer MOVED/ASK/CLUSTERDOWN briefly; ioredis follows them.
      retryDelayOnFailover: 200,
      retryDelayOnClusterDown: 200,
      slotsRefreshTimeout: 2000,
    };
    client = new Cluster(s.nodes, options);
  } else if (s.mode === 'sentinel') {
    client = new Redis({
      ...base,
      sentinels: s.sentinels,
      name: s.masterName,
      ...(s.sentinelPassword ? { sentinelPassword: s.sentinelPassword } : {}),
      ...(s.tls ? { tls: {}, enableTLSForSentinelMode: true, sentinelTLS: {} } : {}),
      ...(s.db !== undefined ? { db: s.db } : {}),
      enableAutoPipelining: role === 'command',
      retryStrategy: reconnectDelay,
      sentinelRetryStrategy: reconnectDelay,
      // Subscribe to +switch-master on the sentinels and reconnect at once on a failover, instead
      // of waiting for the old master to drop the connection.
      failoverDetector: true,
      // A write that reached a demoted master was refused (READONLY), not applied: reconnect
      // through the sentinels and send it again to the new master.
      reconnectOnError: (err) => (err.message.startsWith('READONLY') ? 2 : false),
    });
  } else {
    client = new Redis(s.url, { ...base, enableAutoPipelining: role === 'command', retryStrategy: reconnectDelay });
  }
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

/** Where a spec points, for logs: addresses and names, never a password or TLS material. */
export function describeRedis(spec: RedisSpec): Record<string, unknown> {
  const list = (nodes: HostPort[]) => nodes.map((n) => `${n.host}:${n.port}`).join(',');
  switch (spec.mode) {
    case 'standalone':
      return { mode: 'standalone', url: redactRedisUrl(spec.url), auth: Boolean(spec.password) || undefined };
    case 'sentinel':
      return { mode: 'sentinel', sentinels: list(spec.sentinels), master: spec.masterName, tls: Boolean(spec.tls), auth: Boolean(spec.password) };
    case 'cluster':
      return { mode: 'cluster', nodes: list(spec.nodes), tls: Boolean(spec.tls), auth: Boolean(spec.password) };
  }
}

/** The nodes that take writes: every master of a Cluster, or the one connection otherwise. */
function writableNodes(client: RedisClient): Redis[] {
  return client instanceof Cluster ? client.nodes('master') : [client];
}

function nodeName(node: Redis): string {
  return `${node.options.host ?? '?'}:${node.options.port ?? '?'}`;
}

function withTimeout<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  p.catch(() => undefined); // a rejection after the timeout won must not go unhandled
  return Promise.race([p, new Promise<T>((resolve) => setTimeout(() => resolve(fallback), ms).unref())]);
}

/**
 * Whether Redis answers PING within `timeoutMs`: on a Cluster every slot must have a connected
 * master and every master must answer (a master that does not serves none of its tenants).
 */
export async function pingRedis(client: RedisClient, timeoutMs: number): Promise<boolean> {
  const one = async (node: Redis) => {
    try {
      return (await withTimeout(node.ping(), timeoutMs, 'timeout')) === 'PONG';
    } catch {
      return false;
    }
  };
  if (client instanceof Cluster) {
    if (client.status !== 'ready') return false;
    const masters = client.nodes('master');
    // ioredis drops a node whose connection failed from its pool, while the slot map still names
    // it as the owner until another master takes the slots over: every owner must be connected.
    const connected = new Set(masters.map(nodeName));
    const owners = new Set<string>();
    for (const nodesOfSlot of client.slots) if (nodesOfSlot?.[0]) owners.add(nodesOfSlot[0]);
    if (owners.size === 0 || [...owners].some((o) => !connected.has(o))) return false;
    return (await Promise.all(masters.map(one))).every(Boolean);
  }
  return one(client);
}

/** One note of the startup check, for the log. */
export interface SettingsNote {
  level: 'error' | 'warn' | 'info';
  node: string;
  message: string;
}

/** What the startup check found: a refusal (the process must not serve) and notes to log. */
export interface SettingsVerdict {
  refused: string | undefined;
  notes: SettingsNote[];
}

/**
 * The startup guard (ADR 0018): reads `maxmemory-policy` and `appendonly` on every node that takes
 * writes. Any policy but `noeviction` lets Redis silently drop ledgers, reservations or
 * idempotency records, so it is refused unless `allowEviction` (then reported at error level).
 * AOF off is a warning (a restart loses everything since the last RDB snapshot). CONFIG may be
 * renamed, disabled or denied by ACL (managed Redis services): then the settings could not be
 * checked, which is reported and does not block the start.
 */
export async function checkRedisSettings(client: RedisClient, opts: { allowEviction: boolean }): Promise<SettingsVerdict> {
  const notes: SettingsNote[] = [];
  const refusals: string[] = [];
  for (const node of writableNodes(client)) {
    const where = nodeName(node);
    let policy: string | undefined;
    let aof: string | undefined;
    try {
      const p = (await node.call('CONFIG', 'GET', 'maxmemory-policy')) as string[];
      const a = (await node.call('CONFIG', 'GET', 'appendonly')) as string[];
      policy = p[1];
      aof = a[1];
    } catch (err) {
      notes.push({
        level: 'warn',
        node: where,
        message: `could not check maxmemory-policy and appendonly (CONFIG GET failed: ${(err as Error).message}); make sure Redis runs with maxmemory-policy noeviction and appendonly yes`,
      });
      continue;
    }
    if (policy !== undefined && policy !== 'noeviction') {
      if (opts.allowEviction) {
        notes.push({
          level: 'error',
          node: where,
          message: `maxmemory-policy is '${policy}', not noeviction: Redis may silently evict ledgers, reservations and idempotency records under memory pressure (allowed by CYCLES_ALLOW_EVICTION=true)`,
        });
      } else {
        refusals.push(`${where} has maxmemory-policy '${policy}'`);
      }
    }
    if (aof !== undefined && aof !== 'yes') {
      notes.push({ level: 'warn', node: where, message: 'appendonly is off: a Redis restart loses every write since the last RDB snapshot' });
    }
  }
  const refused = refusals.length === 0
    ? undefined
    : `Refusing to start: ${refusals.join('; ')}. Cycles needs maxmemory-policy noeviction (any eviction policy can silently drop ledgers, reservations and idempotency records). Set it with CONFIG SET maxmemory-policy noeviction (and in redis.conf), or set CYCLES_ALLOW_EVICTION=true to run anyway.`;
  return { refused, notes };
}

/** First and largest pause between connection attempts at start. */
const START_RETRY_FIRST_MS = 500;
const START_RETRY_CAP_MS = 10_000;

/**
 * Waits until Redis answers, retrying with backoff (0.5 s doubling to 10 s) and logging each
 * attempt, so a service started before its Redis waits instead of crash-looping. Returns the
 * connected probe client (the caller runs the startup check on it and closes it), or undefined
 * when `signal` aborted the wait.
 */
export async function waitForRedis(
  spec: RedisSpec,
  logger: Logger,
  signal?: AbortSignal,
): Promise<RedisClient | undefined> {
  const probe = createRedis(spec, 'cycles-start-probe', undefined);
  probe.on('error', () => undefined);
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted) break;
    if (await pingRedis(probe, CONNECT_TIMEOUT_MS)) {
      if (attempt > 1) logger.info({ attempt }, 'Redis is reachable');
      return probe;
    }
    const delayMs = Math.min(START_RETRY_FIRST_MS * 2 ** (attempt - 1), START_RETRY_CAP_MS);
    logger.warn({ attempt, retryInMs: delayMs }, 'Redis is not reachable yet; retrying');
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, delayMs);
      signal?.addEventListener('abort', () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
    });
  }
  probe.disconnect();
  return undefined;
}
