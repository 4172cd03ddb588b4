import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Bound on cached label combinations (operations × statuses × outcomes is small in practice). */
const MAX_CACHED_CHILDREN = 2000;

/**
 * Prometheus metrics of one process. Names follow the `cycles_` prefix; HTTP metrics are
 * labelled by operation (route), HTTP status and protocol error code.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<'plane' | 'operation' | 'status' | 'outcome'>;
  readonly httpDuration: Histogram<'plane' | 'operation' | 'outcome'>;
  readonly decisions: Counter<'operation' | 'decision'>;
  readonly scriptDuration: Histogram<'script' | 'result'>;
  readonly expired: Counter;
  readonly purged: Counter;
  readonly purgeLag: Gauge;
  readonly rateLimited: Counter<'scope'>;
  /** Labelled children by label values, so a request does not re-hash its labels every time. */
  private readonly requestChildren = new Map<string, { count: { inc(): void }; duration: { observe(v: number): void } }>();

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'cycles_process_' });
    this.httpRequests = new Counter({
      name: 'cycles_http_requests_total',
      help: 'HTTP requests by plane, operation, status and outcome (ok or the protocol error code)',
      labelNames: ['plane', 'operation', 'status', 'outcome'],
      registers: [this.registry],
    });
    this.httpDuration = new Histogram({
      name: 'cycles_http_request_duration_seconds',
      help: 'HTTP request latency by plane, operation and outcome',
      labelNames: ['plane', 'operation', 'outcome'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [this.registry],
    });
    this.decisions = new Counter({
      name: 'cycles_reservation_decisions_total',
      help: 'Reservation evaluations by operation (reserve, reserve_dry_run, decide) and decision',
      labelNames: ['operation', 'decision'],
      registers: [this.registry],
    });
    this.scriptDuration = new Histogram({
      name: 'cycles_redis_script_duration_seconds',
      help: 'Latency of one ledger Lua script call (EVALSHA round trip) by script and result',
      labelNames: ['script', 'result'],
      buckets: [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
      registers: [this.registry],
    });
    this.expired = new Counter({
      name: 'cycles_reservations_expired_total',
      help: 'Reservations expired by the expiry sweep',
      registers: [this.registry],
    });
    this.purged = new Counter({
      name: 'cycles_reservations_purged_total',
      help: 'Finished reservation records removed by the expiry sweep after the retention period (ADR 0019)',
      registers: [this.registry],
    });
    this.purgeLag = new Gauge({
      name: 'cycles_reservation_purge_lag_seconds',
      help: 'Largest age past max(retention, 24 h) of a tenant\'s oldest reservation-log entry, as of the last sweep pass; below the longest reservation life while the purge keeps up',
      registers: [this.registry],
    });
    this.rateLimited = new Counter({
      name: 'cycles_rate_limited_total',
      help: 'Runtime requests refused with 429 by the per-tenant or per-key rate limit, by refusing bucket',
      labelNames: ['scope'],
      registers: [this.registry],
    });
  }

  observeRequest(plane: string, operation: string, status: number, outcome: string, seconds: number): void {
    const key = `${plane}|${operation}|${status}|${outcome}`;
    let child = this.requestChildren.get(key);
    if (!child) {
      if (this.requestChildren.size >= MAX_CACHED_CHILDREN) this.requestChildren.clear();
      child = {
        count: this.httpRequests.labels({ plane, operation, status: String(status), outcome }),
        duration: this.httpDuration.labels({ plane, operation, outcome }),
      };
      this.requestChildren.set(key, child);
    }
    child.count.inc();
    child.duration.observe(seconds);
  }
}
