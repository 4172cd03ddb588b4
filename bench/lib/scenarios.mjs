// Timed HTTP runs with autocannon. Each request is built in setupRequest (unique idempotency
// key, next agent) and every answer is counted in onResponse, so the successes - and thus the
// ledger change they imply - are known exactly. Requests left without an answer when the run
// stops (in flight at the deadline, timed out, or answered 5xx) may or may not have reached the
// ledger; they are replayed afterwards with the same idempotency key, which the protocol turns
// into exactly-once: the replay either finds the stored result or performs the operation now.
import autocannon from 'autocannon';
import { Effects, Latencies, readLedger, checkLedger } from './workload.mjs';
import { parallelMap } from './http.mjs';
import { cpuSample, cpuPercent } from './cpu.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const SCENARIOS = ['reserve', 'commit', 'release', 'lifecycle', 'balances'];

/** What one timed run saw. */
class RunTracker {
  constructor(workload) {
    this.effects = new Effects(workload.agents);
    this.pending = new Set();
    this.ambiguous = [];
    this.statuses = {};
    this.ok = 0;
    this.okByKind = {};
    this.fillers = 0;
    this.rejectedSamples = [];
    this.latencies = new Latencies();
    this.connErrors = 0;
    this.clients = 0;
    this.exhausted = false;
  }

  sent(op) {
    this.pending.add(op);
  }

  /** Returns true when the answer is a success (2xx). */
  answered(op, status, body) {
    this.pending.delete(op);
    if (op.kind === 'filler') {
      this.fillers += 1;
      return false;
    }
    this.statuses[status] = (this.statuses[status] ?? 0) + 1;
    if (status >= 200 && status < 300) {
      this.ok += 1;
      this.okByKind[op.kind] = (this.okByKind[op.kind] ?? 0) + 1;
      this.effects.add(op);
      return true;
    }
    if (status >= 500) this.ambiguous.push(op);
    if (this.rejectedSamples.length < 5) this.rejectedSamples.push({ kind: op.kind, status, body: String(body).slice(0, 300) });
    return false;
  }
}

/** The autocannon `requests` list of a scenario. `pool` feeds commit/release with reservation ids. */
function requestsFor(scenario, workload, tracker, pool, stop) {
  const headers = workload.headers;
  const build = (req, ctx, op) => {
    ctx.op = op;
    if (op.kind !== 'filler') tracker.sent(op);
    // A fresh headers object: autocannon writes Content-Length into the one it is given.
    return { ...req, method: op.method, path: op.path, headers: { ...headers }, body: op.body };
  };
  const fromPool = (kind) => (req, ctx) => {
    const entry = pool.next();
    if (!entry) {
      // Out of pre-created reservations: stop early with a harmless request; the run is redone.
      tracker.exhausted = true;
      stop();
      return build(req, ctx, workload.fillerOp());
    }
    const op = kind === 'commit' ? workload.commitOp('c', entry.rid, entry.agent) : workload.releaseOp('l', entry.rid, entry.agent);
    return build(req, ctx, op);
  };
  const record = (status, body, ctx) => tracker.answered(ctx.op, status, body);

  switch (scenario) {
    case 'reserve':
      return [{ setupRequest: (req, ctx) => build(req, ctx, workload.reserveOp('r')), onResponse: record }];
    case 'commit':
      return [{ setupRequest: fromPool('commit'), onResponse: record }];
    case 'release':
      return [{ setupRequest: fromPool('release'), onResponse: record }];
    case 'balances':
      return [{ setupRequest: (req, ctx) => build(req, ctx, workload.balancesOp()), onResponse: record }];
    case 'lifecycle':
      // Two requests per iteration; autocannon gives each iteration a fresh context.
      return [
        {
          setupRequest: (req, ctx) => build(req, ctx, workload.reserveOp('lr')),
          onResponse: (status, body, ctx) => {
            if (tracker.answered(ctx.op, status, body)) {
              ctx.rid = JSON.parse(body).reservation_id;
              ctx.agent = ctx.op.agent;
            }
          },
        },
        {
          // No reservation (reserve failed): returning nothing restarts the iteration.
          setupRequest: (req, ctx) => (ctx.rid ? build(req, ctx, workload.commitOp('lc', ctx.rid, ctx.agent)) : null),
          onResponse: record,
        },
      ];
    default:
      throw new Error(`unknown scenario ${scenario}`);
  }
}

/** A list of pre-created reservations handed out one by one. */
export class Pool {
  constructor(entries) {
    this.entries = entries;
    this.i = 0;
  }

  next() {
    if (this.i >= this.entries.length) return undefined;
    const e = this.entries[this.i];
    this.i += 1;
    return e;
  }

  get used() {
    return this.i;
  }
}

/** Creates `n` reservations through the API with many requests in parallel. */
export async function precreate(ctx, n, parallel = 128) {
  const { workload, server } = ctx;
  let failures = 0;
  const started = performance.now();
  const results = await parallelMap(n, parallel, async () => {
    const op = workload.reserveOp('p');
    for (let attempt = 0; attempt < 3; attempt += 1) {
      try {
        const r = await workload.send(server.runtimePort, op);
        if (r.status === 200 && r.json?.reservation_id) return { rid: r.json.reservation_id, agent: op.agent };
        if (r.status < 500) break;
      } catch {
        /* retry with the same key: idempotent */
      }
    }
    failures += 1;
    return undefined;
  });
  const entries = results.filter(Boolean);
  return { entries, failures, seconds: (performance.now() - started) / 1000 };
}

/**
 * Settles every request whose effect is unknown by replaying it with the same idempotency key.
 * In the lifecycle scenario a settled reserve is also committed, completing its iteration.
 */
async function settle(ctx, scenario, tracker) {
  const { workload, server } = ctx;
  const unknown = [...tracker.pending, ...tracker.ambiguous].filter((op) => op.kind === 'reserve' || op.kind === 'commit' || op.kind === 'release');
  const out = { replayed: unknown.length, succeeded: 0, failed: 0, failures: [] };
  const attempt = async (op) => {
    let last;
    for (let i = 0; i < 3; i += 1) {
      try {
        const r = await workload.send(server.runtimePort, op);
        if (r.status < 500) return r;
        last = r;
      } catch (err) {
        last = { status: `error: ${err.message}`, text: '' };
      }
      await sleep(100);
    }
    return last;
  };
  await parallelMap(unknown.length, 32, async (i) => {
    const op = unknown[i];
    const r = await attempt(op);
    if (r && r.status >= 200 && r.status < 300) {
      out.succeeded += 1;
      tracker.effects.add(op);
      if (scenario === 'lifecycle' && op.kind === 'reserve') {
        const commit = workload.commitOp('lc', r.json.reservation_id, op.agent);
        const rc = await attempt(commit);
        if (rc && rc.status >= 200 && rc.status < 300) tracker.effects.add(commit);
      }
    } else {
      out.failed += 1;
      if (out.failures.length < 5) out.failures.push({ kind: op.kind, status: r?.status ?? 'no answer', body: r?.text?.slice(0, 200), path: op.path });
    }
  });
  return out;
}

/** One timed run of `scenario` at `connections`, with its ledger check. */
export async function runScenario(ctx, scenario, connections, { durationS, pool } = {}) {
  const { workload, server } = ctx;
  const tracker = new RunTracker(workload);
  const before = await readLedger(server.runtimePort, workload);
  let instance;
  let stopRequested = false;
  const stop = () => {
    stopRequested = true;
    if (instance) instance.stop();
  };
  const requests = requestsFor(scenario, workload, tracker, pool ?? new Pool([]), stop);
  const cpuBefore = await cpuSample(ctx);
  let cpuAfter;
  const result = await new Promise((resolve, reject) => {
    instance = autocannon(
      {
        url: `http://127.0.0.1:${server.runtimePort}`,
        connections,
        pipelining: 1,
        duration: durationS,
        timeout: 10,
        requests,
        setupClient: (client) => {
          tracker.clients += 1;
          client.on('connError', () => {
            tracker.connErrors += 1;
          });
        },
      },
      (err, res) => {
        if (err) return reject(err);
        cpuSample(ctx).then((c) => {
          cpuAfter = c;
          resolve(res);
        }, reject);
      },
    );
    if (stopRequested) instance.stop();
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (statusCode >= 200 && statusCode < 300) tracker.latencies.push(responseTime);
    });
  });
  // Let the server finish whatever was in flight when autocannon closed its sockets.
  await sleep(250);
  const settled = await settle(ctx, scenario, tracker);
  const after = await readLedger(server.runtimePort, workload);
  const ledger = checkLedger(before, after, tracker.effects, workload);

  const answered = result.requests.total - tracker.fillers;
  const duration = result.duration;
  const lat = tracker.latencies.summary();
  const errors = result.non2xx + result.errors;
  return {
    scenario,
    connections,
    duration_s: duration,
    requests: answered,
    throughput_rps: answered / duration,
    iterations_per_s: scenario === 'lifecycle' ? (tracker.okByKind.commit ?? 0) / duration : undefined,
    latency_ms: { p50: lat.p50, p90: lat.p90, p99: lat.p99, max: lat.max, mean: lat.mean, samples: lat.count },
    autocannon_latency_ms: { p50: result.latency.p50, p99: result.latency.p99, max: result.latency.max },
    errors,
    non2xx: result.non2xx,
    timeouts: result.timeouts,
    conn_errors: tracker.connErrors,
    status_counts: tracker.statuses,
    success_count: tracker.ok,
    success_by_kind: tracker.okByKind,
    autocannon_2xx: result['2xx'] - tracker.fillers,
    rejected_samples: tracker.rejectedSamples,
    unanswered_settled: settled,
    pool: pool ? { size: pool.entries.length, used: pool.used, exhausted: tracker.exhausted } : undefined,
    effects: tracker.effects.totals(),
    cpu: cpuPercent(cpuBefore, cpuAfter),
    ledger,
  };
}
