import type { Keys } from './keys.js';
import type { RecordFields } from './admin-store.js';
import type { RedisClient, Scripts } from './scripts.js';

/** Index position in a sorted set: the member and its score. */
export interface ScorePosition {
  id: string;
  score: number;
}

/**
 * Entries sharing one score that a window reads to continue past a cursor. Tenants created in
 * the same millisecond share a score; more than this many in one millisecond is not expected.
 */
const TIE_BUCKET_CAP = 10_000;

function nonEmpty(rec: Record<string, string>): RecordFields | undefined {
  return rec && Object.keys(rec).length > 0 ? rec : undefined;
}

/**
 * Exclusive upper bound of the members starting with `prefix`. Index members are ASCII (scope
 * ids, tenant ids and units are), so every one of them sorts below prefix + DEL (0x7f).
 */
function prefixEnd(prefix: string): string {
  return `(${prefix}\x7f`;
}

function pairs(raw: string[]): Array<[string, number]> {
  const out: Array<[string, number]> = [];
  for (let i = 0; i < raw.length; i += 2) out.push([raw[i]!, Number(raw[i + 1])]);
  return out;
}

/**
 * Reads for the governance listings (tenants, budgets, API keys, admin-plane balances) and the
 * API-key update. Every read goes through an index (the tenant registry, a tenant's budget index
 * or key set); none scans the keyspace. Batches are issued together and ride ioredis
 * auto-pipelining, so a window of N records costs one round trip.
 */
export class ListingStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly scripts: Scripts,
    private readonly keys: Keys,
  ) {}

  // ------------------------------------------------------------------ tenants

  async tenantCount(): Promise<number> {
    return this.redis.zcard(this.keys.tenantRegistry());
  }

  /** Tenant ids in registry order (oldest first), by rank. */
  async tenantIdsByRank(offset: number, count: number): Promise<string[]> {
    return this.redis.zrange(this.keys.tenantRegistry(), offset, offset + count - 1);
  }

  /**
   * One window of the tenant registry (scored by created_at), newest first or oldest first,
   * strictly after the (score, id) position of a cursor. Returns [tenant_id, created_at] pairs.
   */
  async tenantWindow(direction: 'asc' | 'desc', after: ScorePosition | undefined, count: number): Promise<Array<[string, number]>> {
    const key = this.keys.tenantRegistry();
    const out: Array<[string, number]> = [];
    if (after) {
      // Entries that share the cursor's score are ordered by id; take those past the cursor id.
      const ties = pairs(await this.redis.zrangebyscore(key, after.score, after.score, 'WITHSCORES', 'LIMIT', 0, TIE_BUCKET_CAP));
      if (direction === 'desc') ties.reverse();
      for (const pair of ties) {
        if (direction === 'desc' ? pair[0] < after.id : pair[0] > after.id) out.push(pair);
        if (out.length === count) return out;
      }
    }
    const rest = count - out.length;
    const raw =
      direction === 'desc'
        ? await this.redis.zrevrangebyscore(key, after ? `(${after.score}` : '+inf', '-inf', 'WITHSCORES', 'LIMIT', 0, rest)
        : await this.redis.zrangebyscore(key, after ? `(${after.score}` : '-inf', '+inf', 'WITHSCORES', 'LIMIT', 0, rest);
    out.push(...pairs(raw));
    return out;
  }

  async getTenants(ids: string[]): Promise<Array<RecordFields | undefined>> {
    return Promise.all(ids.map(async (id) => nonEmpty(await this.redis.hgetall(this.keys.tenant(id)))));
  }

  // ------------------------------------------------------------------ budgets

  /** Budget index members per tenant, all of them or those whose scope starts with `prefix`. */
  async budgetCounts(tenantIds: string[], prefix: string | undefined): Promise<number[]> {
    return Promise.all(
      tenantIds.map((t) =>
        prefix === undefined
          ? this.redis.zcard(this.keys.budgetIndex(t))
          : this.redis.zlexcount(this.keys.budgetIndex(t), `[${prefix}`, prefixEnd(prefix)),
      ),
    );
  }

  /**
   * Budget index members ("scope|unit") in lexicographic order, strictly after `after` when
   * given, limited to the members that start with `prefix` when given.
   */
  async budgetMembers(tenantId: string, after: string | undefined, prefix: string | undefined, count: number): Promise<string[]> {
    const min = after !== undefined ? `(${after}` : prefix !== undefined ? `[${prefix}` : '-';
    const max = prefix !== undefined ? prefixEnd(prefix) : '+';
    return this.redis.zrangebylex(this.keys.budgetIndex(tenantId), min, max, 'LIMIT', 0, count);
  }

  /** Ledgers of one tenant by index member ("scope|unit"). */
  async getBudgets(tenantId: string, members: string[]): Promise<Array<RecordFields | undefined>> {
    return Promise.all(
      members.map(async (m) => {
        const bar = m.lastIndexOf('|');
        if (bar <= 0) return undefined;
        return nonEmpty(await this.redis.hgetall(this.keys.budget(tenantId, m.slice(0, bar), m.slice(bar + 1))));
      }),
    );
  }

  // ------------------------------------------------------------------ API keys

  async keyCounts(tenantIds: string[]): Promise<number[]> {
    return Promise.all(tenantIds.map((t) => this.redis.scard(this.keys.tenantKeys(t))));
  }

  async keyIds(tenantId: string): Promise<string[]> {
    return this.redis.smembers(this.keys.tenantKeys(tenantId));
  }

  async getApiKeys(ids: string[]): Promise<Array<RecordFields | undefined>> {
    return Promise.all(ids.map(async (id) => nonEmpty(await this.redis.hgetall(this.keys.apiKey(id)))));
  }

  /**
   * Sets the given fields on an ACTIVE key in one script call, then drops the key from every
   * instance's auth cache (its permissions or scope filter may have changed).
   */
  async updateApiKey(keyId: string, fields: RecordFields): Promise<{ result: 'OK' | 'NOT_FOUND' | 'NOT_ACTIVE'; status?: string }> {
    const args: string[] = [];
    for (const [k, v] of Object.entries(fields)) args.push(k, v);
    const reply = await this.scripts.run('api-key-update', [this.keys.apiKey(keyId)], args);
    const result = String(reply[0]) as 'OK' | 'NOT_FOUND' | 'NOT_ACTIVE';
    if (result === 'OK') await this.redis.publish(this.keys.authInvalidationChannel(), keyId);
    return reply[1] === undefined || reply[1] === null ? { result } : { result, status: String(reply[1]) };
  }
}
