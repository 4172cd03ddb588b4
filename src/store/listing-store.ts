import type { Keys } from './keys.js';
import { zsetWindow, type ScorePosition } from './zset-window.js';
import type { RecordFields } from './admin-store.js';
import type { RedisClient, Scripts } from './scripts.js';

export type { ScorePosition } from './zset-window.js';

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
    return zsetWindow(this.redis, this.keys.tenantRegistry(), direction, after, count);
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
