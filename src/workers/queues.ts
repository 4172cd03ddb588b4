import { Queue } from 'bullmq';
import type { ConnectionOptions, JobsOptions } from 'bullmq';
import { createRedis, type RedisClient, type RedisSpec } from '../store/redis.js';

/**
 * The BullMQ queues of the events service (ADR 0014). Their keys share one hash tag
 * (`{<prefix>:q}`) so every BullMQ script touches one Cluster slot.
 *
 *   relay       one job per tenant outbox with waiting entries (deduplicated by tenant)
 *   deliveries  one job per webhook delivery, job id = delivery id, retries by the subscription's policy
 *   expiry      job scheduler: the reservation expiry sweep
 *   reconcile   job scheduler: outbox pickup, stale deliveries, ledger audit
 *   retention   job scheduler: trims event, delivery and audit indexes past their TTL
 */
export const QUEUE_NAMES = ['relay', 'deliveries', 'expiry', 'reconcile', 'retention'] as const;
export type QueueName = (typeof QUEUE_NAMES)[number];

export function queuePrefix(keyPrefix: string): string {
  return `{${keyPrefix}:q}`;
}

/**
 * A connection BullMQ may block on (workers need maxRetriesPerRequest: null), in the same topology
 * and with the same credentials and TLS as every other connection (a Cluster instance on Cluster,
 * a sentinel-discovered master on Sentinel).
 */
export function bullConnection(redis: RedisSpec | string, name: string): RedisClient {
  return createRedis(redis, name, undefined, 'queue');
}

export type Queues = Record<QueueName, Queue>;

export function createQueues(connection: ConnectionOptions, keyPrefix: string): Queues {
  const prefix = queuePrefix(keyPrefix);
  const out = {} as Queues;
  for (const name of QUEUE_NAMES) out[name] = new Queue(name, { connection, prefix });
  return out;
}

export async function closeQueues(queues: Partial<Queues>): Promise<void> {
  await Promise.all(Object.values(queues).map((q) => q?.close().catch(() => undefined)));
}

/** Data of a delivery job: where the delivery record lives. */
export interface DeliveryJobData {
  owner: string;
  deliveryId: string;
  subscriptionId: string;
  /** Delay before the next attempt, written by the processor before it throws for a retry. */
  retryDelayMs?: number;
}

/** Data of a replay job: the first attempts of a replay's deliveries, in timestamp order. */
export interface ReplayJobData {
  owner: string;
  subscriptionId: string;
  deliveryIds: string[];
}

export async function enqueueReplay(queue: Queue, data: ReplayJobData, replayId: string): Promise<void> {
  await queue.add('replay', data, {
    jobId: replayId,
    attempts: 10,
    backoff: { type: 'fixed', delay: 1000 },
    removeOnComplete: { age: 3600, count: 1000 },
    removeOnFail: { age: 7 * 86_400, count: 1000 },
  });
}

/** A delivery's next attempt as its own delayed job (after a replay's first attempt failed). */
export async function enqueueRetry(queue: Queue, d: DeliveryJobData, delayMs: number): Promise<void> {
  const job = deliveryJob({ ...d, retryDelayMs: delayMs });
  await queue.add(job.name, job.data, { ...job.opts, delay: delayMs });
}

export const DELIVERY_BACKOFF = 'cycles-subscription-policy';

/** Upper bound on BullMQ attempts; the subscription's retry policy decides the real last attempt. */
const DELIVERY_MAX_JOB_ATTEMPTS = 50;

export function deliveryJob(d: DeliveryJobData): { name: string; data: DeliveryJobData; opts: JobsOptions } {
  return {
    name: 'deliver',
    data: d,
    opts: {
      jobId: d.deliveryId,
      attempts: DELIVERY_MAX_JOB_ATTEMPTS,
      backoff: { type: DELIVERY_BACKOFF },
      removeOnComplete: { age: 3600, count: 10_000 },
      removeOnFail: { age: 7 * 86_400, count: 10_000 },
    },
  };
}

export async function enqueueDeliveries(queue: Queue, deliveries: DeliveryJobData[]): Promise<void> {
  if (deliveries.length === 0) return;
  await queue.addBulk(deliveries.map(deliveryJob));
}

export async function enqueueRelay(queue: Queue, tenantId: string): Promise<void> {
  await queue.add('relay', { tenantId }, {
    deduplication: { id: tenantId, keepLastIfActive: true },
    attempts: 10,
    backoff: { type: 'exponential', delay: 500 },
    removeOnComplete: true,
    removeOnFail: { age: 7 * 86_400, count: 1000 },
  });
}

/**
 * Closes a connection politely: QUIT waits for replies still pending (a plain disconnect rejects
 * them, and nobody may be listening); a connection that cannot answer within 2 s is dropped.
 */
export async function closeConnection(c: { quit(): Promise<unknown>; disconnect(): void }): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), 2000);
    timer.unref();
  });
  const quit = c.quit().then(() => 'ok' as const, () => 'error' as const);
  const outcome = await Promise.race([quit, timeout]);
  clearTimeout(timer);
  if (outcome !== 'ok') c.disconnect();
}
