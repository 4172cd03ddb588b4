import type { Keys } from './keys.js';
import type { RecordFields } from './admin-store.js';
import type { RedisClient } from './scripts.js';
import type { ScorePosition } from './zset-window.js';

/** Which score-ordered index a read walks. */
export type EventIndex = { kind: 'tenant'; tenantId: string } | { kind: 'all' };

/** Inclusive score bounds (milliseconds) of a window; absent = unbounded on that side. */
export interface ScoreBounds {
  minMs?: number | undefined;
  maxMs?: number | undefined;
}

/**
 * Entries sharing one score that a window reads to continue past a cursor (events emitted by one
 * script share a millisecond; a bulk action emits at most 500 of them at once).
 */
const TIE_BUCKET_CAP = 10_000;

function scored(raw: string[]): Array<[string, number]> {
  const out: Array<[string, number]> = [];
  for (let i = 0; i < raw.length; i += 2) out.push([raw[i]!, Number(raw[i + 1])]);
  return out;
}

function nonEmpty(rec: Record<string, string>): RecordFields | undefined {
  return rec && Object.keys(rec).length > 0 ? rec : undefined;
}

/**
 * One window of a score-ordered index within inclusive score bounds, newest first (desc) or
 * oldest first (asc), strictly after the (score, id) position of a cursor. Entries sharing a
 * score are ordered by id (descending in desc order), as ZREVRANGEBYSCORE returns them, so a
 * cursor inside a millisecond continues exactly. Returns [id, score] pairs.
 */
async function boundedWindow(
  redis: RedisClient,
  key: string,
  direction: 'asc' | 'desc',
  after: ScorePosition | undefined,
  count: number,
  bounds: ScoreBounds,
): Promise<Array<[string, number]>> {
  const lo = bounds.minMs ?? -Infinity;
  const hi = bounds.maxMs ?? Infinity;
  const out: Array<[string, number]> = [];
  if (after && after.score >= lo && after.score <= hi) {
    const ties = scored(await redis.zrangebyscore(key, after.score, after.score, 'WITHSCORES', 'LIMIT', 0, TIE_BUCKET_CAP));
    if (direction === 'desc') ties.reverse();
    for (const pair of ties) {
      if (direction === 'desc' ? pair[0] < after.id : pair[0] > after.id) out.push(pair);
      if (out.length === count) return out;
    }
  }
  const rest = count - out.length;
  const edge = (v: number) => (v === Infinity ? '+inf' : v === -Infinity ? '-inf' : String(v));
  if (direction === 'desc') {
    // Continue strictly below the cursor's score, never above the upper bound.
    const top = after && after.score <= hi ? `(${after.score}` : edge(hi);
    if (after && after.score < lo) return out;
    out.push(...scored(await redis.zrevrangebyscore(key, top, edge(lo), 'WITHSCORES', 'LIMIT', 0, rest)));
  } else {
    const bottom = after && after.score >= lo ? `(${after.score}` : edge(lo);
    if (after && after.score > hi) return out;
    out.push(...scored(await redis.zrangebyscore(key, bottom, edge(hi), 'WITHSCORES', 'LIMIT', 0, rest)));
  }
  return out;
}

/**
 * Reads of the stored events and webhook deliveries (written by the events service's relay and
 * delivery worker; this store never writes them). Every read goes through an index: a tenant's
 * or the global event zset, a correlation set, or a subscription's delivery zset. Batches ride
 * ioredis auto-pipelining, so a window of N records costs one round trip; events carry no hash
 * tag, so they are read with one GET each (never a cross-slot MGET).
 */
export class EventStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
  ) {}

  indexKey(index: EventIndex): string {
    return index.kind === 'tenant' ? this.keys.tenantEvents(index.tenantId) : this.keys.allEvents();
  }

  // ------------------------------------------------------------------ events

  /** The stored Event JSON, or undefined when it never existed or has expired. */
  async getEvent(eventId: string): Promise<string | undefined> {
    return (await this.redis.get(this.keys.event(eventId))) ?? undefined;
  }

  async getEvents(ids: string[]): Promise<Array<string | undefined>> {
    return Promise.all(ids.map(async (id) => (await this.redis.get(this.keys.event(id))) ?? undefined));
  }

  /** One window of an event index (see boundedWindow). */
  async eventWindow(
    index: EventIndex,
    direction: 'asc' | 'desc',
    after: ScorePosition | undefined,
    count: number,
    bounds: ScoreBounds,
  ): Promise<Array<[string, number]>> {
    return boundedWindow(this.redis, this.indexKey(index), direction, after, count, bounds);
  }

  /** The timestamp score of an event in an index, or undefined when the index does not hold it. */
  async eventScore(index: EventIndex, eventId: string): Promise<number | undefined> {
    const s = await this.redis.zscore(this.indexKey(index), eventId);
    return s === null ? undefined : Number(s);
  }

  /** Index entries with a score inside the bounds. */
  async eventCount(index: EventIndex, bounds: ScoreBounds): Promise<number> {
    return this.redis.zcount(this.indexKey(index), bounds.minMs ?? '-inf', bounds.maxMs ?? '+inf');
  }

  /** Up to `count` index entries inside the bounds, oldest first. */
  async eventPositions(index: EventIndex, bounds: ScoreBounds, count: number): Promise<Array<[string, number]>> {
    return scored(
      await this.redis.zrangebyscore(this.indexKey(index), bounds.minMs ?? '-inf', bounds.maxMs ?? '+inf', 'WITHSCORES', 'LIMIT', 0, count),
    );
  }

  async correlationSize(correlationId: string): Promise<number> {
    return this.redis.scard(this.keys.eventCorrelation(correlationId));
  }

  /**
   * The members of a correlation set with their score in `index` (undefined for ids the index
   * no longer holds). Callers check the set's size first.
   */
  async correlationPositions(correlationId: string, index: EventIndex): Promise<Array<[string, number | undefined]>> {
    const ids = await this.redis.smembers(this.keys.eventCorrelation(correlationId));
    if (ids.length === 0) return [];
    const scores = await this.redis.zmscore(this.indexKey(index), ...ids);
    return ids.map((id, i) => [id, scores[i] === null || scores[i] === undefined ? undefined : Number(scores[i])]);
  }

  // ------------------------------------------------------------------ deliveries

  async subscriptionExists(ownerId: string, subscriptionId: string): Promise<boolean> {
    return (await this.redis.exists(this.keys.webhook(ownerId, subscriptionId))) === 1;
  }

  async deliveryWindow(
    ownerId: string,
    subscriptionId: string,
    after: ScorePosition | undefined,
    count: number,
    bounds: ScoreBounds,
  ): Promise<Array<[string, number]>> {
    return boundedWindow(this.redis, this.keys.subscriptionDeliveries(ownerId, subscriptionId), 'desc', after, count, bounds);
  }

  async deliveryScore(ownerId: string, subscriptionId: string, deliveryId: string): Promise<number | undefined> {
    const s = await this.redis.zscore(this.keys.subscriptionDeliveries(ownerId, subscriptionId), deliveryId);
    return s === null ? undefined : Number(s);
  }

  async getDeliveries(ownerId: string, ids: string[]): Promise<Array<RecordFields | undefined>> {
    return Promise.all(ids.map(async (id) => nonEmpty(await this.redis.hgetall(this.keys.delivery(ownerId, id)))));
  }
}
