import type { Keys } from './keys.js';
import type { RedisClient, Scripts } from './scripts.js';

/** Context every admin mutation passes to its script, for the event it appends. */
export interface EmitContext {
  eventIdBase: string;
  requestId: string;
  traceId: string;
  actorJson: string;
  /** Stamped on the event as correlation_id when set. */
  correlationId?: string;
}

export type RecordFields = Record<string, string>;

function pairs(fields: RecordFields): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(fields)) out.push(k, v);
  return out;
}

function nonEmpty(rec: Record<string, string>): Record<string, string> | undefined {
  return rec && Object.keys(rec).length > 0 ? rec : undefined;
}

/** The governance plane's store: tenants, API keys, budgets and the audit log. */
export class AdminStore {
  constructor(
    readonly redis: RedisClient,
    readonly scripts: Scripts,
    readonly keys: Keys,
  ) {}

  // ------------------------------------------------------------------ tenants

  /**
   * Registers the tenant id first (harmless if the record write below never happens), then
   * creates the record atomically in the tenant's slot.
   */
  async createTenant(tenantId: string, name: string, fields: RecordFields, createdAtMs: number, e: EmitContext): Promise<string> {
    await this.redis.zadd(this.keys.tenantRegistry(), 'NX', createdAtMs, tenantId);
    const reply = await this.scripts.run(
      'tenant-create',
      [this.keys.tenant(tenantId), this.keys.outbox(tenantId)],
      [name, e.eventIdBase, e.requestId, e.traceId, e.actorJson, tenantId, ...pairs(fields)],
    );
    return String(reply[0]);
  }

  async getTenant(tenantId: string): Promise<RecordFields | undefined> {
    return nonEmpty(await this.redis.hgetall(this.keys.tenant(tenantId)));
  }

  async updateTenant(
    tenantId: string,
    status: string | undefined,
    nowIso: string,
    set: RecordFields,
    unset: string[],
    e: EmitContext,
    cascadeCorrelationId = '',
  ): Promise<{ result: string; detail: string }> {
    const k = this.keys;
    const reply = await this.scripts.run(
      'tenant-update',
      [k.tenant(tenantId), k.outbox(tenantId), k.cascadeState(tenantId)],
      [
        status ?? '', nowIso, e.eventIdBase, e.requestId, e.traceId, e.actorJson, tenantId, unset.join(','), e.correlationId ?? '',
        cascadeCorrelationId, String(Date.parse(nowIso)), ...pairs(set),
      ],
    );
    return { result: String(reply[0]), detail: reply[1] === undefined ? '' : String(reply[1]) };
  }

  /**
   * Every tenant id in registry order, `pageSize` per round trip (not a keyspace scan); used by
   * the expiry sweep and the layout migration.
   */
  async *tenantIdPages(pageSize: number): AsyncGenerator<string[]> {
    for (let offset = 0; ; offset += pageSize) {
      const page = await this.redis.zrange(this.keys.tenantRegistry(), offset, offset + pageSize - 1);
      if (page.length > 0) yield page;
      if (page.length < pageSize) return;
    }
  }

  // ------------------------------------------------------------------ API keys

  async createApiKey(keyId: string, tenantId: string, secretHash: string, fields: RecordFields): Promise<void> {
    await this.redis.hset(this.keys.apiKey(keyId), { ...fields, key_id: keyId, tenant_id: tenantId, key_hash: secretHash });
    await this.redis.sadd(this.keys.tenantKeys(tenantId), keyId);
    // The lookup entry is written last: until it exists the key cannot authenticate.
    await this.redis.set(this.keys.apiKeyByHash(secretHash), keyId);
  }

  async getApiKey(keyId: string): Promise<RecordFields | undefined> {
    return nonEmpty(await this.redis.hgetall(this.keys.apiKey(keyId)));
  }

  async findApiKeyBySecretHash(secretHash: string): Promise<RecordFields | undefined> {
    const keyId = await this.redis.get(this.keys.apiKeyByHash(secretHash));
    if (!keyId) return undefined;
    return this.getApiKey(keyId);
  }

  async revokeApiKey(keyId: string, fields: RecordFields): Promise<void> {
    await this.redis.hset(this.keys.apiKey(keyId), fields);
    await this.redis.publish(this.keys.authInvalidationChannel(), keyId);
  }

  // ------------------------------------------------------------------ budgets

  async createBudget(
    tenantId: string,
    scope: string,
    unit: string,
    allocated: number,
    overdraftLimit: number,
    extra: RecordFields,
    e: EmitContext,
  ): Promise<{ result: string; detail: string }> {
    const k = this.keys;
    const reply = await this.scripts.run(
      'budget-create',
      [k.tenant(tenantId), k.budget(tenantId, scope, unit), k.budgetIndex(tenantId), k.budgetUnits(tenantId), k.outbox(tenantId)],
      [scope, unit, String(allocated), String(overdraftLimit), e.eventIdBase, e.requestId, e.traceId, e.actorJson, tenantId, ...pairs(extra)],
    );
    return { result: String(reply[0]), detail: reply[1] === undefined ? '' : String(reply[1]) };
  }

  async getBudget(tenantId: string, scope: string, unit: string): Promise<RecordFields | undefined> {
    return nonEmpty(await this.redis.hgetall(this.keys.budget(tenantId, scope, unit)));
  }

  async fundBudget(args: {
    tenantId: string;
    scope: string;
    unit: string;
    operation: string;
    amount: number;
    spentOverride: number | undefined;
    payloadHash: string;
    idempotencyKey: string | undefined;
    reason: string | undefined;
    nowMs: number;
    emit: EmitContext;
  }): Promise<string[]> {
    const k = this.keys;
    const t = args.tenantId;
    const idemKey = k.idempotency(t, 'fund', args.idempotencyKey ?? '-');
    const reply = await this.scripts.run(
      'budget-fund',
      [k.tenant(t), k.budget(t, args.scope, args.unit), idemKey, k.outbox(t)],
      [
        args.operation, String(args.amount), args.spentOverride === undefined ? '' : String(args.spentOverride),
        args.payloadHash, args.idempotencyKey ?? '', String(86_400_000), String(args.nowMs),
        args.emit.eventIdBase, args.emit.requestId, args.emit.traceId, args.emit.actorJson, t, args.scope, args.unit,
        args.reason ?? '', args.emit.correlationId ?? '',
      ],
    );
    return reply.map((v) => String(v));
  }

  async setBudgetStatus(
    tenantId: string,
    scope: string,
    unit: string,
    target: 'FROZEN' | 'ACTIVE',
    reason: string | undefined,
    nowMs: number,
    e: EmitContext,
  ): Promise<string[]> {
    const k = this.keys;
    const reply = await this.scripts.run(
      'budget-status',
      [k.tenant(tenantId), k.budget(tenantId, scope, unit), k.outbox(tenantId)],
      [target, String(nowMs), reason ?? '', e.eventIdBase, e.requestId, e.traceId, e.actorJson, tenantId, scope, unit],
    );
    return reply.map((v) => String(v));
  }

  async updateBudget(
    tenantId: string,
    scope: string,
    unit: string,
    overdraftLimit: number | undefined,
    policy: string | undefined,
    metadataJson: string | undefined,
    nowMs: number,
    e: EmitContext,
  ): Promise<string[]> {
    const k = this.keys;
    const reply = await this.scripts.run(
      'budget-update',
      [k.tenant(tenantId), k.budget(tenantId, scope, unit), k.outbox(tenantId)],
      [
        overdraftLimit === undefined ? '' : String(overdraftLimit), policy ?? '', metadataJson ?? '', String(nowMs),
        e.eventIdBase, e.requestId, e.traceId, e.actorJson, tenantId, scope, unit,
      ],
    );
    return reply.map((v) => String(v));
  }

  // ------------------------------------------------------------------ tenant close cascade (ADR 0015)

  /**
   * One bounded batch of the cascade over the tenant-slot children (reservations, budgets,
   * webhook subscriptions). The cursors belong to the caller's run; see tenant-cascade-7.lua.
   */
  async cascadeBatch(args: {
    tenantId: string;
    batchSize: number;
    budgetCursor: string;
    webhookCursor: string;
    nowIso: string;
    emit: EmitContext;
  }): Promise<{ result: 'MORE' | 'DONE' | 'NOT_CLOSED'; budgetCursor: string; webhookCursor: string; changes: string[] }> {
    const k = this.keys;
    const t = args.tenantId;
    const e = args.emit;
    const reply = await this.scripts.run(
      'tenant-cascade',
      [k.tenant(t), k.expiryIndex(t), k.budgetIndex(t), k.webhookIndex(t), k.outbox(t), k.cascadeState(t), k.cascadeReleased(t), k.reservations(t)],
      [
        String(args.batchSize), args.budgetCursor, args.webhookCursor,
        e.eventIdBase, e.requestId, e.traceId, e.actorJson, t, args.nowIso,
      ],
    );
    const [kind, result, budgetCursor, webhookCursor, ...changes] = reply.map((v) => (v === null ? '' : String(v)));
    if (kind !== 'OK') return { result: 'NOT_CLOSED', budgetCursor: '', webhookCursor: '', changes: [] };
    return { result: result as 'MORE' | 'DONE', budgetCursor: budgetCursor ?? '', webhookCursor: webhookCursor ?? '', changes };
  }

  /** API key ids of a tenant, one SSCAN page: [next cursor ('0' when done), ids]. */
  async tenantKeyIdsPage(tenantId: string, cursor: string, count: number): Promise<[string, string[]]> {
    return this.redis.sscan(this.keys.tenantKeys(tenantId), cursor, 'COUNT', count);
  }

  /**
   * The claim or finish step of the cascade on one API key (tenant-cascade-key-4.lua): its
   * outcome (CLAIMED, PENDING, DONE, SKIP; EMITTED, SETTLED, NOOP) or NOT_CLOSED.
   */
  async cascadeKeyStep(tenantId: string, mode: 'claim' | 'finish', keyId: string, arg: string, name: string, e: EmitContext): Promise<string> {
    const k = this.keys;
    const reply = await this.scripts.run(
      'tenant-cascade-key',
      [k.tenant(tenantId), k.cascadeKeys(tenantId), k.outbox(tenantId), k.cascadeState(tenantId)],
      [mode, keyId, arg, name, e.eventIdBase, e.requestId, e.traceId, e.actorJson, tenantId],
    );
    return String(reply[0] === 'OK' ? reply[1] : reply[0]);
  }

  /** Revokes one key for the cascade (compare-and-set on ACTIVE), then drops cached auth results. */
  async cascadeRevokeKey(keyId: string, tenantId: string, revokedAtIso: string, reason: string): Promise<{ result: string; status: string; reason: string }> {
    const reply = await this.scripts.run('api-key-cascade-revoke', [this.keys.apiKey(keyId)], [tenantId, revokedAtIso, reason]);
    const result = String(reply[0]);
    if (result === 'OK') await this.redis.publish(this.keys.authInvalidationChannel(), keyId);
    return { result, status: reply[1] == null ? '' : String(reply[1]), reason: reply[2] == null ? '' : String(reply[2]) };
  }

  /** Appends one event to a tenant outbox on its own (outbox-append.lua). */
  async appendEvent(tenantId: string, ev: { type: string; category: string; scope?: string; correlationId?: string; dataJson: string; source: string }, e: EmitContext): Promise<void> {
    await this.scripts.run('outbox-append', [this.keys.outbox(tenantId)], [
      e.eventIdBase, e.requestId, e.traceId, e.actorJson, tenantId, ev.source, ev.type, ev.category, ev.scope ?? '', ev.correlationId ?? '', ev.dataJson,
    ]);
  }

  async cascadeState(tenantId: string): Promise<RecordFields | undefined> {
    return nonEmpty(await this.redis.hgetall(this.keys.cascadeState(tenantId)));
  }

  /** Notes, before the flip, that the tenant's cascade is under way (cross-tenant index). */
  async markCascadePending(tenantId: string, nowMs: number): Promise<void> {
    await this.redis.zadd(this.keys.cascadePending(), 'NX', nowMs, tenantId);
  }

  /** Records a finished run: state 'done' in the tenant slot, then the pending entry dropped. */
  async markCascadeDone(tenantId: string, nowMs: number): Promise<void> {
    await this.redis.hset(this.keys.cascadeState(tenantId), 'state', 'done', 'completed_at_ms', String(nowMs));
    await this.clearCascadePending(tenantId);
  }

  /** Drops the pending entry alone (a close that was refused never started a cascade). */
  async clearCascadePending(tenantId: string): Promise<void> {
    await this.redis.zrem(this.keys.cascadePending(), tenantId);
  }

  /** Tenants whose cascade has not finished, oldest first (for an operator or a reconciler). */
  async pendingCascades(count: number): Promise<string[]> {
    return this.redis.zrange(this.keys.cascadePending(), 0, count - 1);
  }

  // ------------------------------------------------------------------ audit

  async writeAudit(logId: string, tenantId: string, timestampMs: number, entryJson: string, ttlMs: number): Promise<void> {
    const k = this.keys;
    const multi = this.redis.multi();
    multi.set(k.auditEntry(logId), entryJson, 'PX', ttlMs);
    multi.zadd(k.auditIndex(tenantId), timestampMs, logId);
    multi.zadd(k.auditIndex('_all'), timestampMs, logId);
    await multi.exec();
  }

  /** Audit ids newest first from one index, at or below the cursor position and not before `minScore`. */
  async auditIds(index: string, beforeScore: number | undefined, count: number, minScore?: number): Promise<Array<[string, number]>> {
    const raw = await this.redis.zrevrangebyscore(
      this.keys.auditIndex(index),
      beforeScore === undefined ? '+inf' : beforeScore,
      minScore === undefined ? '-inf' : minScore,
      'WITHSCORES',
      'LIMIT',
      0,
      count,
    );
    const out: Array<[string, number]> = [];
    for (let i = 0; i < raw.length; i += 2) out.push([raw[i]!, Number(raw[i + 1])]);
    return out;
  }

  async auditEntries(ids: string[]): Promise<Array<string | null>> {
    if (ids.length === 0) return [];
    return Promise.all(ids.map((id) => this.redis.get(this.keys.auditEntry(id))));
  }
}
