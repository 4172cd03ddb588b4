import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, createTenant, json, sleep, startHarness, type Harness } from './helpers.js';

/**
 * Every metric that a Grafana panel, a dashboard variable or an alert rule names must be one the
 * services really export: the whole system runs in process (runtime, admin and the events service
 * with its BullMQ workers), traffic creates the labelled series (a reserve, a commit, a live
 * denial, a dry-run denial delivered to one healthy and one failing webhook receiver), and the
 * names are checked against /actuator/prometheus. Names that only redis_exporter or Prometheus
 * itself produce are listed explicitly below.
 */

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DASHBOARD_DIR = join(ROOT, 'dashboards');
const ALERTS_FILE = join(DASHBOARD_DIR, 'alerts.yml');
const OPERATIONS_DOC = join(ROOT, 'docs', 'operations.md');

/** Produced by redis_exporter (job `redis`) or by Prometheus (`up`), never by a Cycles process. */
const EXTERNAL_METRICS = new Set([
  'up',
  'redis_up',
  'redis_memory_used_bytes',
  'redis_memory_max_bytes',
  'redis_memory_used_rss_bytes',
  'redis_connected_clients',
  'redis_blocked_clients',
  'redis_commands_duration_seconds_total',
  'redis_commands_total',
  'redis_commands_processed_total',
  'redis_db_keys',
  'redis_evicted_keys_total',
  'redis_rejected_connections_total',
  'redis_aof_last_write_status',
  'redis_rdb_last_bgsave_status',
]);

/** Labels Prometheus attaches to every scraped series (target labels), so no scrape shows them. */
const TARGET_LABELS = new Set(['job', 'instance']);

/** The scaling triggers and runbook alerts the production guide asks for. */
const REQUIRED_ALERTS = [
  'CyclesRuntimeLatencyP99High',
  'CyclesProcessCpuHigh',
  'CyclesDeliveryQueueGrowing',
  'CyclesWebhookDeliveryFailureRateHigh',
  'CyclesExpiredReservationRateHigh',
  'CyclesRedisMemoryHigh',
  'CyclesRedisCommandLatencyHigh',
  'CyclesInstanceDown',
  'CyclesLedgerDrift',
  'CyclesWebhookSubscriptionAutoDisabled',
];

const PROMQL_KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'offset', 'bool', 'inf', 'nan']);
const STRING_LITERAL = /"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g;
const GRAFANA_VARIABLE = /\$\{[^}]*\}|\$[A-Za-z_]\w*/g;

/**
 * Metric names referenced by a PromQL expression: identifiers that are not functions or
 * aggregations (followed by `(`), not keywords, not label names (matchers, `by (...)` and
 * friends are dropped first) and not parts of numbers or durations.
 */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(GRAFANA_VARIABLE, ' ')
    .replace(STRING_LITERAL, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of stripped.matchAll(/(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const rest = stripped.slice(m.index! + m[0].length);
    if (/^\s*\(/.test(rest)) continue;
    if (PROMQL_KEYWORDS.has(m[0].toLowerCase())) continue;
    names.add(m[0]);
  }
  return [...names];
}

/** Label names used in the matchers of each `metric{...}` selector of an expression. */
function selectorLabels(expr: string): Array<{ metric: string; labels: string[] }> {
  const out: Array<{ metric: string; labels: string[] }> = [];
  const noVars = expr.replace(STRING_LITERAL, (s) => s.replace(/[{}]/g, ' '));
  for (const m of noVars.matchAll(/(?<![A-Za-z0-9_:.])([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}/g)) {
    const labels = [...m[2]!.matchAll(/([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*"/g)].map((l) => l[1]!);
    out.push({ metric: m[1]!, labels });
  }
  return out;
}

interface Query {
  where: string;
  expr: string;
}

/** Every query of every dashboard: panel targets (rows included) and query variables. */
function dashboardQueries(): { files: string[]; dashboards: any[]; queries: Query[] } {
  const files = readdirSync(DASHBOARD_DIR).filter((f) => f.endsWith('.json')).sort();
  const dashboards = files.map((f) => JSON.parse(readFileSync(join(DASHBOARD_DIR, f), 'utf8')));
  const queries: Query[] = [];
  dashboards.forEach((d, i) => {
    const walk = (panels: any[]) => {
      for (const p of panels ?? []) {
        if (p.type === 'row') {
          walk(p.panels);
          continue;
        }
        for (const t of p.targets ?? []) queries.push({ where: `${files[i]} / ${p.title} / ${t.refId}`, expr: String(t.expr ?? '') });
      }
    };
    walk(d.panels);
    for (const v of d.templating?.list ?? []) {
      if (v.type !== 'query') continue;
      const q = typeof v.query === 'string' ? v.query : String(v.query?.query ?? '');
      const labelValues = /^label_values\((.+),\s*[A-Za-z_]\w*\s*\)$/.exec(q.trim());
      const queryResult = /^query_result\((.+)\)$/.exec(q.trim());
      const expr = labelValues?.[1] ?? queryResult?.[1];
      if (expr) queries.push({ where: `${files[i]} / variable ${v.name}`, expr });
    }
  });
  return { files, dashboards, queries };
}

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  severity?: string;
  runbook?: string;
}

/**
 * The alert rules of dashboards/alerts.yml. A deliberately small reader for the file's own style
 * (`expr:` inline or as a `|` block); the caller checks that it found every `- alert:` entry.
 */
function alertRules(text: string): Rule[] {
  const lines = text.split('\n');
  const rules: Rule[] = [];
  let current: Rule | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const start = /^\s*- alert:\s*(\S+)\s*$/.exec(line);
    if (start) {
      current = { alert: start[1]!, expr: '' };
      rules.push(current);
      continue;
    }
    if (!current) continue;
    const expr = /^(\s*)expr:\s*(.*)$/.exec(line);
    if (expr) {
      const indent = expr[1]!.length;
      const value = expr[2]!.trim();
      if (/^[|>][-+]?$/.test(value)) {
        const body: string[] = [];
        while (i + 1 < lines.length && (lines[i + 1]!.trim() === '' || lines[i + 1]!.search(/\S/) > indent)) body.push(lines[++i]!);
        current.expr = body.join('\n').trim();
      } else {
        current.expr = value.replace(/^(['"])(.*)\1$/, '$2');
      }
      continue;
    }
    const field = /^\s*(for|severity|runbook):\s*(.+?)\s*$/.exec(line);
    if (field) current[field[1] as 'for' | 'severity' | 'runbook'] = field[2]!.replace(/^(['"])(.*)\1$/, '$2');
  }
  return rules;
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
function anchors(markdown: string): Set<string> {
  const out = new Set<string>();
  for (const m of markdown.matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    out.add(m[1]!.toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-'));
  }
  return out;
}

interface Scrape {
  /** Series names with the label names seen on them. */
  series: Map<string, Set<string>>;
  /** Metric families declared by `# TYPE`, with their type. */
  families: Map<string, string>;
}

function parseScrape(text: string): Scrape {
  const series = new Map<string, Set<string>>();
  const families = new Map<string, string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)/.exec(line);
    if (type) families.set(type[1]!, type[2]!);
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s/.exec(line);
    if (!m) continue;
    const labels = series.get(m[1]!) ?? new Set<string>();
    for (const l of (m[2] ?? '').matchAll(/([A-Za-z_]\w*)="/g)) labels.add(l[1]!);
    series.set(m[1]!, labels);
  }
  return { series, families };
}

/**
 * The names a query may use: every series in the scrape, plus the series a declared family will
 * have once observed (a labelled counter that has not counted yet shows only its `# TYPE`). A
 * histogram is queried through `_bucket`, `_sum` and `_count`, never by its family name.
 */
function knownNames(scrape: Scrape): Set<string> {
  const names = new Set(scrape.series.keys());
  for (const [family, type] of scrape.families) {
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(family + s);
    else if (type === 'summary') for (const s of ['', '_sum', '_count']) names.add(family + s);
    else names.add(family);
  }
  return names;
}

/** A webhook receiver on loopback: `/ok` answers 204, anything else 500. */
class Receiver {
  readonly paths: string[] = [];
  private server!: http.Server;
  base = '';

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        this.paths.push(req.url ?? '');
        res.statusCode = req.url === '/ok' ? 204 : 500;
        res.end();
      });
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.base = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const adminHeaders = { 'x-admin-api-key': ADMIN_KEY };

describe('PromQL name extraction', () => {
  it('keeps metric names and drops functions, keywords, labels, durations and variables', () => {
    expect(metricNames('histogram_quantile(0.99, sum by (le, operation) (rate(a_bucket{job=~"$job", x="y{z}"}[$__rate_interval]))) > 0.05 and on(operation) b_count')).toEqual(['a_bucket', 'b_count']);
    expect(metricNames('sum without (instance) (increase(c_total[1h] offset 10m)) / ignoring(x) group_left d > bool 1e3')).toEqual(['c_total', 'd']);
    expect(metricNames('deriv(sum(max by (state) (q{s=~"a|b"}))[10m:1m]) > 0 or up == 0 unless Inf')).toEqual(['q', 'up']);
    expect(selectorLabels('rate(m_total{job="j", reason=~"a|b", tenant!="x"}[5m]) / n{}')).toEqual([
      { metric: 'm_total', labels: ['job', 'reason', 'tenant'] },
      { metric: 'n', labels: [] },
    ]);
  });
});

describe('dashboards and alert rules', () => {
  let h: Harness;
  const rx = new Receiver();
  let scrape: Scrape;

  beforeAll(async () => {
    h = await startHarness({ keyPrefix: `cydash${randomBytes(2).toString('hex')}`, expiryIntervalMs: 500, events: { reconcileIntervalMs: 1000 } });
    await h.system.startEventsService();
    await rx.start();
    const sec = await h.admin.inject({
      method: 'PUT', url: '/v1/admin/config/webhook-security', headers: adminHeaders,
      payload: { allow_http: true, blocked_cidr_ranges: [], allowed_url_patterns: [] },
    });
    expect(sec.statusCode, sec.body).toBe(200);

    const t = await createTenant(h);
    for (const path of ['/ok', '/fail']) {
      const res = await h.admin.inject({
        method: 'POST', url: `/v1/admin/webhooks?tenant_id=${t.id}`, headers: adminHeaders,
        payload: {
          url: `${rx.base}${path}`, event_types: ['reservation.denied'], signing_secret: `whsec_${randomBytes(12).toString('hex')}`,
          retry_policy: { max_retries: 0 }, disable_after_failures: 1,
        },
      });
      expect(res.statusCode, res.body).toBe(201);
    }
    // A reserve and its commit, a live denial (409) and a dry-run denial (its event is delivered).
    const rid = await t.reserveOk(1000);
    expect((await t.commit(rid, 800)).statusCode).toBe(200);
    expect((await t.reserve(10_000_000_000)).statusCode).toBe(409);
    expect(json(await t.reserve(10_000_000_000, { dry_run: true })).decision).toBe('DENY');

    // Wait for both deliveries to be recorded: a success, a failure and the auto-disable.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const res = await h.runtime.inject({ method: 'GET', url: '/actuator/prometheus', headers: adminHeaders });
      expect(res.statusCode).toBe(200);
      scrape = parseScrape(res.body);
      const ready = ['cycles_webhook_delivery_success_total', 'cycles_webhook_delivery_failed_total', 'cycles_webhook_subscription_auto_disabled_total',
        'cycles_reconciliation_drift', 'cycles_events_relay_lag_seconds_bucket'].every((n) => scrape.series.has(n));
      if (ready) break;
      if (Date.now() > deadline) throw new Error(`series missing after traffic; receiver saw ${rx.paths.join(',')}`);
      await sleep(100);
    }
  });

  afterAll(async () => {
    await h?.close();
    await rx.close();
  });

  it('the traffic produced the labelled runtime series the panels rely on', () => {
    for (const name of ['cycles_http_requests_total', 'cycles_http_request_duration_seconds_bucket', 'cycles_reservation_decisions_total',
      'cycles_redis_script_duration_seconds_bucket', 'cycles_queue_jobs', 'cycles_process_process_cpu_seconds_total']) {
      expect(scrape.series.has(name), name).toBe(true);
    }
    expect(scrape.series.get('cycles_http_request_duration_seconds_bucket')).toEqual(new Set(['le', 'plane', 'operation', 'outcome']));
  });

  it('every dashboard is a provisionable Grafana dashboard whose panels all have queries', () => {
    const { files, dashboards } = dashboardQueries();
    expect(files).toEqual(['events.json', 'redis.json', 'runtime.json']);
    const uids = new Set<string>();
    dashboards.forEach((d, i) => {
      expect(typeof d.uid, files[i]).toBe('string');
      expect(uids.has(d.uid), `duplicate uid ${d.uid}`).toBe(false);
      uids.add(d.uid);
      expect(d.title, files[i]).toMatch(/^Cycles \/ /);
      expect(d.templating.list.find((v: any) => v.name === 'datasource')?.type).toBe('datasource');
      const ids = new Set<number>();
      const walk = (panels: any[]) => {
        for (const p of panels ?? []) {
          expect(ids.has(p.id), `${files[i]}: duplicate panel id ${p.id}`).toBe(false);
          ids.add(p.id);
          if (p.type === 'row') {
            walk(p.panels);
            continue;
          }
          expect(p.datasource?.uid, `${files[i]} / ${p.title}`).toBe('${datasource}');
          expect(p.targets?.length ?? 0, `${files[i]} / ${p.title} has no query`).toBeGreaterThan(0);
          for (const t of p.targets) expect(String(t.expr ?? '').trim(), `${files[i]} / ${p.title}`).not.toBe('');
        }
      };
      walk(d.panels);
    });
  });

  it('every alert rule has a duration, a severity and a runbook section that exists in docs/operations.md', () => {
    const text = readFileSync(ALERTS_FILE, 'utf8');
    const rules = alertRules(text);
    expect(rules.length).toBe((text.match(/^\s*- alert:/gm) ?? []).length);
    expect(rules.map((r) => r.alert)).toEqual(expect.arrayContaining(REQUIRED_ALERTS));
    const docAnchors = anchors(readFileSync(OPERATIONS_DOC, 'utf8'));
    for (const r of rules) {
      expect(r.expr, r.alert).not.toBe('');
      expect(r.for, `${r.alert}: for`).toMatch(/^\d+[smh]$/);
      expect(['critical', 'warning', 'info'], `${r.alert}: severity`).toContain(r.severity);
      const runbook = /^docs\/operations\.md#(.+)$/.exec(r.runbook ?? '');
      expect(runbook, `${r.alert}: runbook`).not.toBeNull();
      expect(docAnchors.has(runbook![1]!), `${r.alert}: no section #${runbook![1]} in docs/operations.md`).toBe(true);
    }
  });

  it('every metric named by a panel, a variable or an alert rule is exported (or explicitly external)', () => {
    const known = knownNames(scrape);
    const rules = alertRules(readFileSync(ALERTS_FILE, 'utf8'));
    const queries: Query[] = [...dashboardQueries().queries, ...rules.map((r) => ({ where: `alerts.yml / ${r.alert}`, expr: r.expr }))];
    expect(queries.length).toBeGreaterThan(60);

    const missing: string[] = [];
    const usedExternal = new Set<string>();
    for (const q of queries) {
      const names = metricNames(q.expr);
      if (names.length === 0) missing.push(`${q.where}: no metric in ${q.expr}`);
      for (const name of names) {
        if (EXTERNAL_METRICS.has(name)) usedExternal.add(name);
        else if (!known.has(name)) missing.push(`${q.where}: ${name}`);
      }
      // Labels matched on a series the scrape shows must exist on it.
      for (const { metric, labels } of selectorLabels(q.expr)) {
        const seen = scrape.series.get(metric);
        if (!seen) continue;
        for (const l of labels) if (!seen.has(l) && !TARGET_LABELS.has(l)) missing.push(`${q.where}: ${metric} has no label ${l}`);
      }
    }
    expect(missing).toEqual([]);
    // The allowlist names only exporter or Prometheus metrics, and only ones still in use.
    for (const name of EXTERNAL_METRICS) expect(name === 'up' || name.startsWith('redis_'), name).toBe(true);
    expect([...EXTERNAL_METRICS].filter((n) => !usedExternal.has(n))).toEqual([]);
  });
});
