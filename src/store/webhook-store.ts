import type { EmitContext, RecordFields } from './admin-store.js';
import type { Keys } from './keys.js';
import type { RedisClient, Scripts } from './scripts.js';

function pairs(fields: RecordFields): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(fields)) out.push(k, v);
  return out;
}

function nonEmpty(rec: Record<string, string> | null | undefined): RecordFields | undefined {
  return rec && Object.keys(rec).length > 0 ? rec : undefined;
}

export type WebhookCreateResult = 'CREATED' | 'TENANT_NOT_FOUND' | 'TENANT_CLOSED' | 'DUPLICATE_RESOURCE';
export type WebhookUpdateResult = 'OK' | 'NOT_FOUND' | 'TENANT_CLOSED' | 'RETRY';
export type WebhookDeleteResult = { result: 'OK'; previousStatus: string } | { result: 'NOT_FOUND' | 'TENANT_CLOSED' };

/** Where a subscription lives: its owner's slot, and whether that owner is a concrete tenant. */
export interface WebhookOwner {
  ownerId: string;
  concrete: boolean;
}

/**
 * Webhook subscriptions (admin digest §2.5) and the webhook-security config (§2.9). A subscription
 * lives in its owner's slot; mutations are one script each, atomic with the owner's status and the
 * outbox entry. The cross-owner registry is kept outside the scripts (a separate slot), written
 * before a create and after a delete, so it may briefly name an id with no record, never miss one.
 */
export class WebhookStore {
  constructor(
    readonly redis: RedisClient,
    private readonly scripts: Scripts,
    private readonly keys: Keys,
  ) {}

  async create(o: WebhookOwner, id: string, fields: RecordFields, emit: boolean, dataJson: string, e: EmitContext): Promise<WebhookCreateResult> {
    const k = this.keys;
    await this.redis.zadd(k.webhookRegistry(), 0, id);
    const reply = await this.scripts.run(
      'webhook-create',
      [k.tenant(o.ownerId), k.webhook(o.ownerId, id), k.webhookIndex(o.ownerId), k.outbox(o.ownerId)],
      [id, o.ownerId, o.concrete ? '1' : '0', emit ? '1' : '0', e.eventIdBase, e.requestId, e.traceId, e.actorJson, dataJson, ...pairs(fields)],
    );
    const result = String(reply[0]) as WebhookCreateResult;
    if (result !== 'CREATED') await this.redis.zrem(k.webhookRegistry(), id);
    return result;
  }

  async update(
    o: WebhookOwner,
    id: string,
    expectedRev: string,
    fields: RecordFields,
    event: { type: string; dataJson: string; correlationId: string } | undefined,
    e: EmitContext,
  ): Promise<WebhookUpdateResult> {
    const k = this.keys;
    const reply = await this.scripts.run(
      'webhook-update',
      [k.tenant(o.ownerId), k.webhook(o.ownerId, id), k.outbox(o.ownerId)],
      [
        expectedRev, o.ownerId, o.concrete ? '1' : '0', event?.type ?? '', e.eventIdBase, e.requestId, e.traceId, e.actorJson,
        event?.dataJson ?? '{}', event?.correlationId ?? '', ...pairs(fields),
      ],
    );
    return String(reply[0]) as WebhookUpdateResult;
  }

  async delete(o: WebhookOwner, id: string, emit: boolean, e: EmitContext): Promise<WebhookDeleteResult> {
    const k = this.keys;
    const reply = await this.scripts.run(
      'webhook-delete',
      [k.tenant(o.ownerId), k.webhook(o.ownerId, id), k.webhookIndex(o.ownerId), k.outbox(o.ownerId)],
      [id, o.ownerId, o.concrete ? '1' : '0', emit ? '1' : '0', e.eventIdBase, e.requestId, e.traceId, e.actorJson, e.correlationId ?? ''],
    );
    const result = String(reply[0]);
    if (result === 'OK') {
      await this.redis.zrem(k.webhookRegistry(), id);
      return { result: 'OK', previousStatus: String(reply[1]) };
    }
    return { result: result as 'NOT_FOUND' | 'TENANT_CLOSED' };
  }

  async get(ownerId: string, id: string): Promise<RecordFields | undefined> {
    return nonEmpty(await this.redis.hgetall(this.keys.webhook(ownerId, id)));
  }

  /** Several records at once (each in its owner's slot); undefined where a record is gone. */
  async getMany(refs: Array<{ ownerId: string; id: string }>): Promise<Array<RecordFields | undefined>> {
    return Promise.all(refs.map((r) => this.get(r.ownerId, r.id)));
  }

  /** Subscription ids in ascending order, strictly after `afterId`: one owner's, or every owner's. */
  async ids(ownerId: string | undefined, afterId: string | undefined, count: number): Promise<string[]> {
    const key = ownerId === undefined ? this.keys.webhookRegistry() : this.keys.webhookIndex(ownerId);
    return this.redis.zrangebylex(key, afterId === undefined ? '-' : `(${afterId}`, '+', 'LIMIT', 0, count);
  }

  async tenantStatus(tenantId: string): Promise<string | undefined> {
    return (await this.redis.hget(this.keys.tenant(tenantId), 'status')) ?? undefined;
  }

  async getSecurityConfig(): Promise<string | undefined> {
    return (await this.redis.get(this.keys.webhookSecurityConfig())) ?? undefined;
  }

  async putSecurityConfig(json: string): Promise<void> {
    await this.redis.set(this.keys.webhookSecurityConfig(), json);
  }
}
