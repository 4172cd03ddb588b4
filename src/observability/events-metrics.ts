import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/**
 * Metrics of the events service, named as the reference's (events digest §5.1) so its alert rules
 * and dashboards apply unchanged, plus the pipeline's own: relay throughput and lag, queue depths,
 * reconciliation findings.
 */
export class EventsMetrics {
  readonly attempts: Counter<'tenant' | 'event_type'>;
  readonly success: Counter<'tenant' | 'event_type' | 'status_code_family'>;
  readonly failed: Counter<'tenant' | 'event_type' | 'reason'>;
  readonly retried: Counter<'tenant' | 'event_type'>;
  readonly stale: Counter<'tenant'>;
  readonly autoDisabled: Counter<'tenant' | 'reason'>;
  readonly latency: Histogram<'tenant' | 'event_type' | 'outcome'>;
  readonly relayed: Counter<'category'>;
  readonly relayLag: Histogram;
  readonly queueJobs: Gauge<'queue' | 'state'>;
  readonly drift: Gauge<'check'>;
  readonly reconciled: Counter<'check' | 'action'>;

  /** The label set to record: without `tenant` when the tenant tag is off. */
  labels<T extends { tenant?: string }>(l: T): T {
    if (this.tenantTag) return l;
    const { tenant: _omit, ...rest } = l;
    return rest as T;
  }

  /**
   * With `tenantTag` false (CYCLES_METRICS_TENANT_TAG_ENABLED=false) no series carries a `tenant`
   * label, for scrape paths shared with people who must not see tenant ids.
   */
  constructor(
    registry: Registry,
    queueCounts?: () => Promise<Record<string, Record<string, number>>>,
    private readonly tenantTag = true,
  ) {
    const registers = [registry];
    const names = <T extends string>(...l: T[]): T[] => (tenantTag ? l : l.filter((x) => x !== 'tenant'));
    this.attempts = new Counter({ name: 'cycles_webhook_delivery_attempts_total', help: 'Webhook POSTs started', labelNames: names('tenant', 'event_type'), registers });
    this.success = new Counter({
      name: 'cycles_webhook_delivery_success_total', help: 'Webhook deliveries answered with 2xx',
      labelNames: names('tenant', 'event_type', 'status_code_family'), registers,
    });
    this.failed = new Counter({
      name: 'cycles_webhook_delivery_failed_total',
      help: 'Failed delivery attempts (retried or final) and upstream failures, by reason',
      labelNames: names('tenant', 'event_type', 'reason'), registers,
    });
    this.retried = new Counter({ name: 'cycles_webhook_delivery_retried_total', help: 'Retries scheduled', labelNames: names('tenant', 'event_type'), registers });
    this.stale = new Counter({ name: 'cycles_webhook_delivery_stale_total', help: 'Deliveries failed unsent for being older than MAX_DELIVERY_AGE_MS', labelNames: names('tenant'), registers });
    this.autoDisabled = new Counter({
      name: 'cycles_webhook_subscription_auto_disabled_total', help: 'Subscriptions disabled after consecutive failed deliveries',
      labelNames: names('tenant', 'reason'), registers,
    });
    this.latency = new Histogram({
      name: 'cycles_webhook_delivery_latency_seconds', help: 'Webhook round trip by outcome',
      labelNames: names('tenant', 'event_type', 'outcome'), buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers,
    });
    this.relayed = new Counter({ name: 'cycles_events_relayed_total', help: 'Outbox entries stored as events', labelNames: ['category'], registers });
    this.relayLag = new Histogram({
      name: 'cycles_events_relay_lag_seconds', help: 'Time from an event being appended to the outbox to it being stored and routed',
      buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300], registers,
    });
    this.queueJobs = new Gauge({
      name: 'cycles_queue_jobs', help: 'BullMQ jobs per queue and state (read at scrape time)', labelNames: ['queue', 'state'], registers,
      collect: queueCounts
        ? async () => {
            const counts = await queueCounts().catch(() => undefined);
            if (!counts) return;
            for (const [queue, byState] of Object.entries(counts)) {
              for (const [state, n] of Object.entries(byState)) this.queueJobs.set({ queue, state }, n);
            }
          }
        : undefined,
    });
    this.drift = new Gauge({
      name: 'cycles_reconciliation_drift', help: 'Findings of the last reconciliation run per check (0 = consistent)', labelNames: ['check'], registers,
    });
    this.reconciled = new Counter({
      name: 'cycles_reconciliation_actions_total', help: 'Reconciliation findings and what was done about them', labelNames: ['check', 'action'], registers,
    });
  }
}
