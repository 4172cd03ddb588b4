import { randomBytes } from 'node:crypto';
import type { PipelineStore, NewDelivery } from '../store/pipeline-store.js';
import type { AuthContext } from './auth.js';
import { CyclesError } from './errors.js';
import { routeFromRecord, selects } from './event-routing.js';
import { newSpanId, postWebhook, sign } from './webhook-transport.js';
import {
  SYSTEM_OWNER,
  connectBlockList,
  ownerOfSubscriptionId,
  securityConfigFrom,
  urlProblem,
  type Resolver,
  type SecretCipher,
  type WebhookSecurityConfig,
} from './webhooks.js';

/**
 * The test probe and replay (admin digest §5.8–§5.9, events digest §2.13–§2.14). The probe is
 * synchronous: one signed `system.webhook_test` POST from the admin process, recorded nowhere and
 * never touching the subscription's failure counters. Replay selects every deliverable event of a
 * window (all-or-narrow), creates one new delivery per event and hands them, in timestamp order, to
 * the events service as one ordered replay job.
 */

/** Candidates a replay examines before refusing the window as too wide (server scan limit). */
export const REPLAY_SCAN_LIMIT = 20_000;
const REPLAY_LOCK_MS = 3_600_000;
const PROBE_CONNECT_TIMEOUT_MS = 5000;
const PROBE_TIMEOUT_MS = 10_000;

export interface WebhookOpsDeps {
  store: PipelineStore;
  cipher: SecretCipher;
  resolve: Resolver;
  deliveryTtlMs: number;
  /** Enqueues one ordered replay job for these deliveries of a subscription. */
  enqueueReplay(owner: string, subscriptionId: string, deliveryIds: string[]): Promise<void>;
}

export interface ReplayRequest {
  from?: string;
  to?: string;
  event_types?: string[];
  max_events?: number;
}

function hex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

export class WebhookOps {
  constructor(private readonly deps: WebhookOpsDeps) {}

  private async subscription(auth: AuthContext, id: string): Promise<{ owner: string; rec: Record<string, string> }> {
    const owner = ownerOfSubscriptionId(id);
    const rec = owner === undefined ? undefined : await this.deps.store.subscription(owner, id);
    if (owner === undefined || rec === undefined || (auth.kind === 'tenant' && auth.tenantId !== owner)) {
      throw new CyclesError('WEBHOOK_NOT_FOUND', `Webhook subscription not found: ${id}`);
    }
    if (owner !== SYSTEM_OWNER) {
      const status = await this.deps.store.redis.hget(this.deps.store.keys.tenant(owner), 'status');
      if (status === 'CLOSED') throw new CyclesError('TENANT_CLOSED', `Tenant is CLOSED: ${owner}`);
    }
    return { owner, rec };
  }

  private async securityConfig(): Promise<WebhookSecurityConfig> {
    return securityConfigFrom(await this.deps.store.redis.get(this.deps.store.keys.webhookSecurityConfig()));
  }

  async test(auth: AuthContext, id: string): Promise<Record<string, unknown>> {
    const { owner, rec } = await this.subscription(auth, id);
    const url = rec.url ?? '';
    const config = await this.securityConfig();
    const problem = await urlProblem(url, config, this.deps.resolve);
    if (problem !== undefined) throw new CyclesError('WEBHOOK_URL_INVALID', `Webhook URL invalid: ${url} (${problem})`);
    const eventId = `evt_test_${hex(6)}`;
    const body = JSON.stringify({
      event_id: eventId,
      event_type: 'system.webhook_test',
      category: 'system',
      timestamp: new Date().toISOString(),
      tenant_id: owner,
      source: 'cycles-admin',
      data: { subscription_id: id, test: true },
    });
    const traceId = hex(16);
    const headers: Record<string, string> = {
      'Content-Type': 'application/json',
      'User-Agent': 'cycles-server-admin/test',
      'X-Cycles-Event-Id': eventId,
      'X-Cycles-Event-Type': 'system.webhook_test',
      'X-Cycles-Trace-Id': traceId,
      traceparent: `00-${traceId}-${newSpanId()}-01`,
    };
    if (rec.signing_secret_enc) {
      try {
        headers['X-Cycles-Signature'] = sign(this.deps.cipher.decrypt(rec.signing_secret_enc), body);
      } catch {
        // An unreadable secret: the probe goes out unsigned, which the receiver will report.
      }
    }
    // The probe pins its connection to addresses checked against the block list, as deliveries do.
    const result = await postWebhook(url, body, headers, {
      connectTimeoutMs: PROBE_CONNECT_TIMEOUT_MS,
      timeoutMs: PROBE_TIMEOUT_MS,
      blockList: connectBlockList(config),
    });
    const success = result.status >= 200 && result.status < 300;
    const out: Record<string, unknown> = { success, response_time_ms: result.elapsedMs, event_id: eventId };
    if (result.status > 0) out.response_status = result.status;
    if (!success) out.error_message = result.status > 0 ? `HTTP ${result.status}` : (result.error ?? 'transport error');
    return out;
  }

  async replay(auth: AuthContext, id: string, req: ReplayRequest): Promise<{ owner: string; response: Record<string, unknown> }> {
    const { owner, rec } = await this.subscription(auth, id);
    const fromMs = req.from === undefined ? 0 : Date.parse(req.from);
    const toMs = req.to === undefined ? Date.now() : Date.parse(req.to);
    if (Number.isNaN(fromMs) || Number.isNaN(toMs)) throw new CyclesError('INVALID_REQUEST', 'Validation failed: from and to must be ISO-8601 date-times');
    if (fromMs > toMs) throw new CyclesError('INVALID_REQUEST', 'Validation failed: from must not be after to');
    const maxEvents = req.max_events ?? 100;
    const replayId = `replay_${hex(6)}`;
    const { store } = this.deps;
    const lock = store.keys.replayLock(owner, id);
    const locked = await store.redis.set(lock, replayId, 'PX', REPLAY_LOCK_MS, 'NX');
    if (locked !== 'OK') throw new CyclesError('REPLAY_IN_PROGRESS', `A replay is already in progress for subscription ${id}`);
    try {
      const route = routeFromRecord(owner, rec);
      if (route === undefined || rec.status !== 'ACTIVE') {
        return { owner, response: { replay_id: replayId, events_queued: 0, estimated_completion_seconds: 0 } };
      }
      const index = owner === SYSTEM_OWNER ? store.keys.allEvents() : store.keys.tenantEvents(owner);
      const ids = await store.redis.zrangebyscore(index, fromMs, toMs, 'LIMIT', 0, REPLAY_SCAN_LIMIT + 1);
      if (ids.length > REPLAY_SCAN_LIMIT) {
        throw new CyclesError('INVALID_REQUEST', `The replay window holds more than ${REPLAY_SCAN_LIMIT} events (scan limit); narrow from/to`);
      }
      const types = req.event_types && req.event_types.length > 0 ? new Set(req.event_types) : undefined;
      const selected: NewDelivery[] = [];
      for (let i = 0; i < ids.length; i += 500) {
        const chunk = ids.slice(i, i + 500);
        const bodies = await Promise.all(chunk.map((eid) => store.event(eid)));
        for (const raw of bodies) {
          if (raw === undefined) continue;
          const e = JSON.parse(raw) as { event_id: string; event_type: string; category: string; scope?: string; tenant_id: string; trace_id?: string };
          if (types && !types.has(e.event_type)) continue;
          if (!selects(route, e)) continue;
          selected.push({
            deliveryId: `del_${hex(8)}`, subscriptionId: id, eventId: e.event_id, eventType: e.event_type, tenantId: e.tenant_id, traceId: e.trace_id,
          });
          if (selected.length > maxEvents) {
            throw new CyclesError('INVALID_REQUEST', `The replay window holds more than max_events (${maxEvents}) deliverable events; narrow from/to or raise max_events (up to 1000)`);
          }
        }
      }
      const statuses = await store.createDeliveries(owner, selected, this.deps.deliveryTtlMs, new Date());
      const queued = selected.filter((d) => statuses.get(d.deliveryId) === 'PENDING').map((d) => d.deliveryId);
      if (queued.length > 0) await this.deps.enqueueReplay(owner, id, queued);
      return {
        owner,
        response: { replay_id: replayId, events_queued: queued.length, estimated_completion_seconds: queued.length === 0 ? 0 : Math.max(1, Math.ceil(queued.length / 10)) },
      };
    } finally {
      await store.redis.del(lock).catch(() => undefined);
    }
  }
}
