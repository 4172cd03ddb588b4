import type { RedisClient } from './scripts.js';

/** Index position in a sorted set: the member and its score. */
export interface ScorePosition {
  id: string;
  score: number;
}

/**
 * Entries sharing one score that a window reads to continue past a cursor (items created in the
 * same millisecond share a score; more than this many in one millisecond is not expected).
 */
const TIE_BUCKET_CAP = 10_000;

function scored(raw: string[]): Array<[string, number]> {
  const out: Array<[string, number]> = [];
  for (let i = 0; i < raw.length; i += 2) out.push([raw[i]!, Number(raw[i + 1])]);
  return out;
}

/**
 * One window of a score-ordered index, newest first (desc) or oldest first (asc), strictly after
 * the (score, id) position of a cursor. Entries that share the cursor's score are ordered by id,
 * which keeps pagination exact when many entries have the same score. Returns [id, score] pairs.
 */
export async function zsetWindow(
  redis: RedisClient,
  key: string,
  direction: 'asc' | 'desc',
  after: ScorePosition | undefined,
  count: number,
): Promise<Array<[string, number]>> {
  const out: Array<[string, number]> = [];
  if (after) {
    const ties = scored(await redis.zrangebyscore(key, after.score, after.score, 'WITHSCORES', 'LIMIT', 0, TIE_BUCKET_CAP));
    if (direction === 'desc') ties.reverse();
    for (const pair of ties) {
      if (direction === 'desc' ? pair[0] < after.id : pair[0] > after.id) out.push(pair);
      if (out.length === count) return out;
    }
  }
  const rest = count - out.length;
  const raw =
    direction === 'desc'
      ? await redis.zrevrangebyscore(key, after ? `(${after.score}` : '+inf', '-inf', 'WITHSCORES', 'LIMIT', 0, rest)
      : await redis.zrangebyscore(key, after ? `(${after.score}` : '-inf', '+inf', 'WITHSCORES', 'LIMIT', 0, rest);
  out.push(...scored(raw));
  return out;
}
