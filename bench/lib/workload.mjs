// The requests the benchmark sends, the ledger effects their successes imply, and the ledger
// check that compares those effects with the balances the server reports.
import { randomBytes } from 'node:crypto';
import { request } from './http.mjs';

export const UNIT = 'USD_MICROCENTS';

/**
 * Builds operations (one HTTP request each). Every operation gets a unique idempotency key and
 * the next agent in round-robin order, so load spreads over the per-agent leaf budgets while
 * every reserve/commit/release also touches the one shared tenant budget.
 */
export class Workload {
  constructor({ tenant, agents, apiKey, estimate, actual, ttlMs }) {
    this.tenant = tenant;
    this.agents = agents;
    this.apiKey = apiKey;
    this.estimate = estimate;
    this.actual = actual;
    this.ttlMs = ttlMs;
    this.runId = randomBytes(4).toString('hex');
    this.seq = 0;
    this.headers = { 'content-type': 'application/json', 'x-cycles-api-key': apiKey };
  }

  agentName(i) {
    return `a${i}`;
  }

  nextKey(label) {
    const n = this.seq;
    this.seq += 1;
    return { n, key: `bench-${this.runId}-${label}-${n}` };
  }

  reserveOp(label) {
    const { n, key } = this.nextKey(label);
    const agent = n % this.agents;
    const body = JSON.stringify({
      idempotency_key: key,
      subject: { tenant: this.tenant, agent: this.agentName(agent) },
      action: { kind: 'llm.completion', name: 'bench-model' },
      estimate: { unit: UNIT, amount: this.estimate },
      ttl_ms: this.ttlMs,
    });
    return { kind: 'reserve', key, agent, method: 'POST', path: '/v1/reservations', body };
  }

  commitOp(label, reservationId, agent) {
    const { key } = this.nextKey(label);
    const body = JSON.stringify({ idempotency_key: key, actual: { unit: UNIT, amount: this.actual } });
    return { kind: 'commit', key, agent, rid: reservationId, method: 'POST', path: `/v1/reservations/${reservationId}/commit`, body };
  }

  releaseOp(label, reservationId, agent) {
    const { key } = this.nextKey(label);
    const body = JSON.stringify({ idempotency_key: key, reason: 'bench' });
    return { kind: 'release', key, agent, rid: reservationId, method: 'POST', path: `/v1/reservations/${reservationId}/release`, body };
  }

  balancesOp() {
    return { kind: 'balances', method: 'GET', path: `/v1/balances?tenant=${this.tenant}`, body: '' };
  }

  fillerOp() {
    return { kind: 'filler', method: 'GET', path: '/actuator/health/liveness', body: '' };
  }

  /** Sends one operation outside autocannon (pre-creation, replays). */
  send(port, op, timeoutMs = 15_000) {
    return request({ port, method: op.method, path: op.path, headers: this.headers, body: op.body || undefined, timeoutMs });
  }
}

/** Per-agent counts of successful ledger-changing operations. */
export class Effects {
  constructor(agents) {
    this.reserve = new Float64Array(agents);
    this.commit = new Float64Array(agents);
    this.release = new Float64Array(agents);
  }

  add(op) {
    if (op.kind === 'reserve') this.reserve[op.agent] += 1;
    else if (op.kind === 'commit') this.commit[op.agent] += 1;
    else if (op.kind === 'release') this.release[op.agent] += 1;
  }

  totals() {
    const sum = (a) => a.reduce((s, v) => s + v, 0);
    return { reserve: sum(this.reserve), commit: sum(this.commit), release: sum(this.release) };
  }
}

/** Reads every balance of the tenant through GET /v1/balances (paged): scope_path -> amounts. */
export async function readLedger(port, workload) {
  const out = new Map();
  let cursor;
  for (let page = 0; page < 100; page += 1) {
    const qs = new URLSearchParams({ tenant: workload.tenant, limit: '200' });
    if (cursor) qs.set('cursor', cursor);
    const r = await request({ port, method: 'GET', path: `/v1/balances?${qs}`, headers: { 'x-cycles-api-key': workload.apiKey } });
    if (r.status !== 200) throw new Error(`GET /v1/balances answered ${r.status}: ${r.text.slice(0, 200)}`);
    for (const b of r.json.balances) {
      out.set(b.scope_path, { reserved: b.reserved.amount, spent: b.spent.amount, remaining: b.remaining.amount });
    }
    if (!r.json.has_more) return out;
    cursor = r.json.next_cursor;
  }
  throw new Error('GET /v1/balances: too many pages');
}

/**
 * Compares the change of reserved/spent on the tenant scope and on every agent leaf with what the
 * counted successes imply: reserved += E x (reserves - commits - releases), spent += A x commits.
 */
export function checkLedger(before, after, effects, workload) {
  const E = workload.estimate;
  const A = workload.actual;
  const details = [];
  let checked = 0;
  let mismatches = 0;
  const compare = (scope, field, expected) => {
    checked += 1;
    const b = before.get(scope);
    const a = after.get(scope);
    const actual = a && b ? a[field] - b[field] : NaN;
    if (actual !== expected) {
      mismatches += 1;
      if (details.length < 10) details.push({ scope, field, expected_delta: expected, actual_delta: actual });
    }
  };
  let totalReserved = 0;
  let totalSpent = 0;
  for (let i = 0; i < workload.agents; i += 1) {
    const dReserved = E * (effects.reserve[i] - effects.commit[i] - effects.release[i]);
    const dSpent = A * effects.commit[i];
    totalReserved += dReserved;
    totalSpent += dSpent;
    const scope = `tenant:${workload.tenant}/agent:${workload.agentName(i)}`;
    compare(scope, 'reserved', dReserved);
    compare(scope, 'spent', dSpent);
  }
  const tenantScope = `tenant:${workload.tenant}`;
  compare(tenantScope, 'reserved', totalReserved);
  compare(tenantScope, 'spent', totalSpent);
  const tb = before.get(tenantScope);
  const ta = after.get(tenantScope);
  return {
    checked,
    mismatches,
    details,
    tenant: {
      expected_reserved_delta: totalReserved,
      actual_reserved_delta: ta && tb ? ta.reserved - tb.reserved : null,
      expected_spent_delta: totalSpent,
      actual_spent_delta: ta && tb ? ta.spent - tb.spent : null,
    },
  };
}

/** Latency samples (ms); percentiles by nearest rank on the sorted samples. */
export class Latencies {
  constructor() {
    this.buf = new Float64Array(1 << 16);
    this.n = 0;
  }

  push(ms) {
    if (this.n === this.buf.length) {
      const bigger = new Float64Array(this.buf.length * 2);
      bigger.set(this.buf);
      this.buf = bigger;
    }
    this.buf[this.n] = ms;
    this.n += 1;
  }

  summary() {
    if (this.n === 0) return { count: 0, p50: null, p90: null, p99: null, max: null, mean: null };
    const s = this.buf.slice(0, this.n).sort();
    const at = (q) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
    let sum = 0;
    for (let i = 0; i < s.length; i += 1) sum += s[i];
    return { count: s.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: s[s.length - 1], mean: sum / s.length };
  }
}
