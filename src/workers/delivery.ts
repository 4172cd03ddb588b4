import { UnrecoverableError, type Job } from 'bullmq';
import type { Logger } from 'pino';
import { newEventIdBase } from '../domain/ids.js';
import { failureReason, newSpanId, postWebhook, sign, USER_AGENT } from '../domain/webhook-transport.js';
import {
  DEFAULT_DISABLE_AFTER_FAILURES,
  DEFAULT_RETRY_POLICY,
  connectBlockList,
  securityConfigFrom,
  type SecretCipher,
  type WebhookSecurityConfig,
} from '../domain/webhooks.js';
import type { EventsMetrics } from '../observability/events-metrics.js';
import type { AttemptRecord, PipelineStore } from '../store/pipeline-store.js';
import type { DeliveryJobData, ReplayJobData } from './queues.js';

export interface DeliveryOptions {
  store: PipelineStore;
  cipher: SecretCipher;
  maxDeliveryAgeMs: number;
  connectTimeoutMs: number;
  timeoutMs: number;
  logger: Logger;
  metrics: EventsMetrics;
}

interface RetryPolicy {
  max_retries: number;
  initial_delay_ms: number;
  backoff_multiplier: number;
  max_delay_ms: number;
}

function retryPolicy(raw: string | undefined): RetryPolicy {
  let stored: Partial<RetryPolicy> = {};
  try {
    if (raw) stored = JSON.parse(raw) as Partial<RetryPolicy>;
  } catch {
    stored = {};
  }
  const pick = (k: keyof RetryPolicy) => (typeof stored[k] === 'number' && Number.isFinite(stored[k]) ? stored[k]! : DEFAULT_RETRY_POLICY[k]);
  return { max_retries: pick('max_retries'), initial_delay_ms: pick('initial_delay_ms'), backoff_multiplier: pick('backoff_multiplier'), max_delay_ms: pick('max_delay_ms') };
}

/** Delay after failed attempt number `attempts` (1-based): min(initial × multiplier^(attempts−1), max). */
export function retryDelayMs(policy: RetryPolicy, attempts: number): number {
  return Math.min(Math.floor(policy.initial_delay_ms * policy.backoff_multiplier ** (attempts - 1)), policy.max_delay_ms);
}

const TRACE_ID = /^[0-9a-f]{32}$/;
const FLAGS = /^[0-9a-f]{2}$/;
/** Headers the delivery sets itself; a subscription's custom headers cannot replace them. */
const RESERVED_HEADERS = new Set([
  'content-type', 'content-length', 'host', 'connection', 'transfer-encoding', 'user-agent', 'x-cycles-event-id',
  'x-cycles-event-type', 'x-cycles-trace-id', 'traceparent', 'x-cycles-signature', 'x-request-id',
]);

function newTraceId(): string {
  let id = '';
  while (id === '' || /^0+$/.test(id)) id = [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, '0')).join('');
  return id;
}

/** Thrown to make BullMQ retry a delivery after the delay the processor chose. */
export class RetryLater extends Error {}

/**
 * Processes one delivery job (events digest §2.5–§2.11). The delivery record is the source of
 * truth: a job whose delivery is already SUCCESS or FAILED does nothing, so a re-queued or
 * duplicated job never POSTs twice for one record state. A retry is a thrown RetryLater after the
 * record shows RETRYING; BullMQ's custom backoff reads the delay from the job data.
 */
export class DeliveryProcessor {
  private security: { at: number; config: WebhookSecurityConfig } | undefined;

  constructor(private readonly opts: DeliveryOptions) {}

  private async securityConfig(): Promise<WebhookSecurityConfig> {
    const now = Date.now();
    if (this.security && now - this.security.at < 2000) return this.security.config;
    const raw = await this.opts.store.redis.get(this.opts.store.keys.webhookSecurityConfig());
    const config = securityConfigFrom(raw);
    this.security = { at: now, config };
    return config;
  }

  /** A 'deliver' job: one attempt; a retry is a thrown RetryLater after the delay is stored on the job. */
  async process(job: Job<DeliveryJobData>): Promise<string> {
    const r = await this.attempt(job.data);
    // A delivery that ended FAILED fails its job for good, so it shows in bull-board's failed list
    // (re-deliver with replay: retrying the job finds a FAILED record and does nothing).
    if (r.result.startsWith('failed: ')) throw new UnrecoverableError(r.result.slice('failed: '.length));
    if (r.retryDelayMs === undefined) return r.result;
    await job.updateData({ ...job.data, retryDelayMs: r.retryDelayMs });
    throw new RetryLater(`${r.result}; retry in ${r.retryDelayMs} ms`);
  }

  /**
   * A 'replay' job: the first attempts of a replay's deliveries, one after another in timestamp
   * order (so the receiver sees them in order); a delivery that needs a retry continues as its own
   * delayed job. Re-running the job after a crash skips deliveries already attempted.
   */
  async processReplay(job: Job<ReplayJobData>, retryLater: (d: DeliveryJobData, delayMs: number) => Promise<void>): Promise<number> {
    let delivered = 0;
    for (const deliveryId of job.data.deliveryIds) {
      const data = { owner: job.data.owner, subscriptionId: job.data.subscriptionId, deliveryId };
      const r = await this.attempt(data);
      if (r.retryDelayMs !== undefined) await retryLater(data, r.retryDelayMs);
      if (r.result === 'delivered') delivered++;
    }
    return delivered;
  }

  /** One attempt of one delivery; retryDelayMs is set when the record now says RETRYING. */
  async attempt(data: DeliveryJobData): Promise<{ result: string; retryDelayMs?: number }> {
    const r = await this.attemptOnce(data);
    return typeof r === 'string' ? { result: r } : r;
  }

  private async attemptOnce(data: DeliveryJobData): Promise<string | { result: string; retryDelayMs: number }> {
    const { store, metrics, logger } = this.opts;
    const { owner, deliveryId, subscriptionId } = data;
    const rec = await store.delivery(owner, deliveryId);
    if (rec === undefined) {
      logger.warn({ delivery: deliveryId }, 'delivery record not found; job dropped');
      return 'missing';
    }
    if (rec.status !== 'PENDING' && rec.status !== 'RETRYING') return `already ${rec.status}`;
    const tenant = rec.tenant_id ?? 'UNKNOWN';
    const eventType = rec.event_type ?? 'UNKNOWN';
    const base = { eventIdBase: newEventIdBase(), deliveryTraceId: rec.trace_id ?? '' };
    const upstream = async (errorMessage: string, reason?: string): Promise<string> => {
      if (reason) metrics.failed.inc(metrics.labels({ tenant: reason === 'subscription_inactive' ? tenant : 'UNKNOWN', event_type: eventType, reason }));
      await store.recordAttempt(owner, subscriptionId, deliveryId, { ...base, outcome: 'FAIL_UPSTREAM', attempted: false, nowIso: new Date().toISOString(), errorMessage });
      return `failed: ${errorMessage}`;
    };

    const attemptedAt = Number(rec.attempted_at_ms ?? Date.now());
    const age = Date.now() - attemptedAt;
    if (age > this.opts.maxDeliveryAgeMs) {
      metrics.stale.inc(metrics.labels({ tenant: 'UNKNOWN' }));
      return upstream(`Delivery expired: ${Math.floor(age / 3_600_000)}h old (max ${Math.floor(this.opts.maxDeliveryAgeMs / 3_600_000)}h)`);
    }
    const body = await store.event(rec.event_id ?? '');
    if (body === undefined) return upstream(`Event not found: ${rec.event_id}`, 'event_not_found');
    const sub = await store.subscription(owner, subscriptionId);
    if (sub === undefined) return upstream('Subscription not found', 'subscription_not_found');
    if (sub.status !== 'ACTIVE') return upstream(`Subscription not active: ${sub.status}`, 'subscription_inactive');

    const event = JSON.parse(body) as { event_id: string; event_type: string; trace_id?: string; request_id?: string };
    let secret: string | undefined;
    if (sub.signing_secret_enc) {
      try {
        secret = this.opts.cipher.decrypt(sub.signing_secret_enc);
      } catch (err) {
        logger.error({ subscription: subscriptionId, err: (err as Error).message }, 'signing secret cannot be decrypted; delivering unsigned');
      }
    }
    const traceId = event.trace_id && TRACE_ID.test(event.trace_id) ? event.trace_id : newTraceId();
    const flags = rec.traceparent_inbound_valid === 'true' && rec.trace_flags && FLAGS.test(rec.trace_flags) ? rec.trace_flags : '01';
    const headers: Record<string, string> = {
      'Content-Type': 'application/json',
      'User-Agent': USER_AGENT,
      'X-Cycles-Event-Id': event.event_id,
      'X-Cycles-Event-Type': event.event_type,
      'X-Cycles-Trace-Id': traceId,
      traceparent: `00-${traceId}-${newSpanId()}-${flags}`,
    };
    if (event.request_id) headers['X-Request-Id'] = event.request_id;
    if (secret) headers['X-Cycles-Signature'] = sign(secret, body);
    if (sub.headers) {
      try {
        for (const [k, v] of Object.entries(JSON.parse(sub.headers) as Record<string, string>)) {
          if (!RESERVED_HEADERS.has(k.toLowerCase()) && typeof v === 'string') headers[k] = v;
        }
      } catch {
        logger.warn({ subscription: subscriptionId }, 'custom headers unreadable; sent without them');
      }
    }

    const blockList = connectBlockList(await this.securityConfig());
    metrics.attempts.inc(metrics.labels({ tenant, event_type: eventType }));
    const result = await postWebhook(sub.url ?? '', body, headers, {
      connectTimeoutMs: this.opts.connectTimeoutMs,
      timeoutMs: this.opts.timeoutMs,
      blockList,
    });
    const now = new Date();
    const common: AttemptRecord = {
      ...base,
      outcome: 'SUCCESS',
      attempted: true,
      nowIso: now.toISOString(),
      responseStatus: result.status,
      responseTimeMs: result.elapsedMs,
      traceId: event.trace_id && TRACE_ID.test(event.trace_id) ? event.trace_id : undefined,
    };
    if (result.status >= 200 && result.status < 300) {
      metrics.success.inc(metrics.labels({ tenant, event_type: eventType, status_code_family: '2xx' }));
      metrics.latency.observe(metrics.labels({ tenant, event_type: eventType, outcome: 'success' }), result.elapsedMs / 1000);
      await store.recordAttempt(owner, subscriptionId, deliveryId, common);
      return 'delivered';
    }

    const reason = failureReason(result.status);
    metrics.failed.inc(metrics.labels({ tenant, event_type: eventType, reason }));
    if (result.elapsedMs > 0) metrics.latency.observe(metrics.labels({ tenant, event_type: eventType, outcome: 'failure' }), result.elapsedMs / 1000);
    const errorMessage = result.status > 0 ? `HTTP ${result.status}` : (result.error ?? 'transport error');
    const policy = retryPolicy(sub.retry_policy);
    const attempts = Number(rec.attempts ?? 0) + 1;
    if (attempts > policy.max_retries) {
      const reply = await store.recordAttempt(owner, subscriptionId, deliveryId, { ...common, outcome: 'FAIL', errorMessage });
      if (reply.kind === 'RECORDED' && reply.disabled) {
        metrics.autoDisabled.inc(metrics.labels({ tenant: owner, reason: 'consecutive_failures' }));
        const threshold = Number(sub.disable_after_failures ?? DEFAULT_DISABLE_AFTER_FAILURES);
        logger.warn({ subscription: subscriptionId, threshold }, `Subscription ${subscriptionId} auto-disabled after ${threshold} consecutive failures`);
      }
      return `failed: ${errorMessage}`;
    }
    const delay = retryDelayMs(policy, attempts);
    const reply = await store.recordAttempt(owner, subscriptionId, deliveryId, {
      ...common,
      outcome: 'RETRY',
      errorMessage,
      nextRetryAtIso: new Date(now.getTime() + delay).toISOString(),
    });
    if (reply.kind !== 'RECORDED') return 'superseded';
    metrics.retried.inc(metrics.labels({ tenant, event_type: eventType }));
    return { result: errorMessage, retryDelayMs: delay };
  }
}

/** BullMQ custom backoff: the delay the processor wrote before throwing. */
export function deliveryBackoff(_attemptsMade: number, _type: string | undefined, err: Error | undefined, job: Job | undefined): number {
  if (!(err instanceof RetryLater) && err instanceof UnrecoverableError) return -1;
  const data = job?.data as DeliveryJobData | undefined;
  return data?.retryDelayMs ?? 1000;
}
