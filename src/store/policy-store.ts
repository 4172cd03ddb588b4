import type { EmitContext, RecordFields } from './admin-store.js';
import type { Keys } from './keys.js';
import type { RedisClient, Scripts } from './scripts.js';

function pairs(fields: RecordFields): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(fields)) out.push(k, v);
  return out;
}

function record(flat: Array<string | number | null>): RecordFields {
  const out: RecordFields = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  return out;
}

export type PolicyCreateResult = { result: 'CREATED' } | { result: string; detail: string };
export type PolicyUpdateResult = { result: 'OK'; record: RecordFields } | { result: string; detail: string };

/**
 * Policies of one tenant, all in the tenant's slot: the record hash, a lexicographic id index for
 * listing and a name index for uniqueness. Mutations are one script each, atomic with the
 * tenant's status and the outbox entry.
 */
export class PolicyStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly scripts: Scripts,
    private readonly keys: Keys,
  ) {}

  async create(tenantId: string, policyId: string, name: string, scopePattern: string, fields: RecordFields, e: EmitContext): Promise<PolicyCreateResult> {
    const k = this.keys;
    const reply = await this.scripts.run(
      'policy-create',
      [k.tenant(tenantId), k.policy(tenantId, policyId), k.policyIndex(tenantId), k.policyNames(tenantId), k.outbox(tenantId)],
      [policyId, name, scopePattern, e.eventIdBase, e.requestId, e.traceId, e.actorJson, tenantId, ...pairs(fields)],
    );
    const result = String(reply[0]);
    if (result === 'CREATED') return { result: 'CREATED' };
    return { result, detail: reply[1] === undefined || reply[1] === null ? '' : String(reply[1]) };
  }

  async update(
    tenantId: string,
    policyId: string,
    name: string | undefined,
    updatedAtIso: string,
    changed: string[],
    fields: RecordFields,
    e: EmitContext,
  ): Promise<PolicyUpdateResult> {
    const k = this.keys;
    const reply = await this.scripts.run(
      'policy-update',
      [k.tenant(tenantId), k.policy(tenantId, policyId), k.policyNames(tenantId), k.outbox(tenantId)],
      [policyId, name ?? '', updatedAtIso, e.eventIdBase, e.requestId, e.traceId, e.actorJson, tenantId, changed.join(','), ...pairs(fields)],
    );
    const result = String(reply[0]);
    if (result === 'OK') return { result: 'OK', record: record(reply.slice(1)) };
    return { result, detail: reply[1] === undefined || reply[1] === null ? '' : String(reply[1]) };
  }

  async get(tenantId: string, policyId: string): Promise<RecordFields | undefined> {
    const rec = await this.redis.hgetall(this.keys.policy(tenantId, policyId));
    return rec && Object.keys(rec).length > 0 ? rec : undefined;
  }

  /** Policy ids in ascending order, strictly after `afterId` when given. */
  async ids(tenantId: string, afterId: string | undefined, count: number): Promise<string[]> {
    return this.redis.zrangebylex(this.keys.policyIndex(tenantId), afterId === undefined ? '-' : `(${afterId}`, '+', 'LIMIT', 0, count);
  }

  async getMany(tenantId: string, policyIds: string[]): Promise<Array<RecordFields | undefined>> {
    if (policyIds.length === 0) return [];
    const recs = await Promise.all(policyIds.map((id) => this.redis.hgetall(this.keys.policy(tenantId, id))));
    return recs.map((rec) => (rec && Object.keys(rec).length > 0 ? rec : undefined));
  }
}
