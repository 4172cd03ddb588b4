#!/usr/bin/env node
// Cycles benchmark harness: `npm run bench` (builds first). See bench/README.md.
//
// Starts a private redis-server and the server (`node dist/cli.js all`) on free ports,
// provisions one tenant with a shared tenant budget and per-agent leaf budgets, runs the HTTP
// scenarios with autocannon at each concurrency, checks the ledger after every run, measures
// the Redis-bound limit of the reserve script from Node, prints tables and writes JSON to
// bench/results/. Everything it started is stopped at the end, also on error or Ctrl-C.
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRedis, startServer, stopAll, tail } from './lib/procs.mjs';
import { requestOk, parallelMap, closeAgent } from './lib/http.mjs';
import { Workload, UNIT } from './lib/workload.mjs';
import { SCENARIOS, Pool, precreate, runScenario } from './lib/scenarios.mjs';
import { loadDist, openDirect, runRedisBound } from './lib/redis-bound.mjs';
import { runsTable, redisTable, targetsTable, fmtNum, fmtMs } from './lib/report.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..');

// ------------------------------------------------------------------------------ settings

function settings(env = process.env) {
  const durationS = env.BENCH_DURATION_S ? Number(env.BENCH_DURATION_S) : 5;
  if (!Number.isFinite(durationS) || durationS <= 0 || durationS > 3600) throw new Error(`BENCH_DURATION_S must be a positive number of seconds, got '${env.BENCH_DURATION_S}'`);
  const connections = (env.BENCH_CONNECTIONS || '1,10,50,200').split(',').map((s) => Number(s.trim()));
  if (connections.some((c) => !Number.isInteger(c) || c < 1 || c > 5000)) throw new Error(`BENCH_CONNECTIONS must be a comma list of integers in [1, 5000], got '${env.BENCH_CONNECTIONS}'`);
  const agents = env.BENCH_AGENTS ? Number(env.BENCH_AGENTS) : 200;
  if (!Number.isInteger(agents) || agents < 1 || agents > 10_000) throw new Error(`BENCH_AGENTS must be an integer in [1, 10000], got '${env.BENCH_AGENTS}'`);
  const scenarios = env.BENCH_SCENARIOS ? env.BENCH_SCENARIOS.split(',').map((s) => s.trim()) : SCENARIOS;
  for (const s of scenarios) if (!SCENARIOS.includes(s)) throw new Error(`BENCH_SCENARIOS: unknown scenario '${s}' (known: ${SCENARIOS.join(', ')})`);
  return {
    durationS,
    connections,
    agents,
    scenarios,
    tenant: 'bench-tenant',
    estimate: 1000,
    actual: 750,
    // Long enough that nothing expires during the run (the tenant's max TTL default is 1 h):
    // the expiry sweep runs in this process too and would otherwise move reserved amounts.
    ttlMs: 3_600_000,
    tenantAllocated: 1_000_000_000_000_000,
    agentAllocated: 10_000_000_000_000,
    poolMargin: 2,
  };
}

const log = (msg) => process.stderr.write(`[bench] ${msg}\n`);

// ------------------------------------------------------------------------------ machine info

function versionOf(pkg) {
  try {
    return JSON.parse(readFileSync(join(REPO, 'node_modules', pkg, 'package.json'), 'utf8')).version;
  } catch {
    return undefined;
  }
}

function gitInfo() {
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: REPO, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: REPO, encoding: 'utf8' }).trim() !== '';
    return { commit, src_dirty: dirty };
  } catch {
    return undefined;
  }
}

function machine(redisVersion, loadAtStart) {
  const cpus = os.cpus();
  return {
    platform: os.platform(),
    release: os.release(),
    arch: os.arch(),
    cpu_count: cpus.length,
    cpu_model: cpus[0]?.model,
    cpus: cpus.map((c) => ({ model: c.model, speed_mhz: c.speed })),
    total_mem_bytes: os.totalmem(),
    load_avg_at_start: loadAtStart,
    load_avg_at_end: os.loadavg(),
    node_version: process.version,
    redis_version: redisVersion,
    autocannon_version: versionOf('autocannon'),
    ioredis_version: versionOf('ioredis'),
    fastify_version: versionOf('fastify'),
    git: gitInfo(),
  };
}

// ------------------------------------------------------------------------------ provisioning

async function provision(server, cfg, adminKey) {
  const admin = (method, path, body) =>
    requestOk({ port: server.adminPort, method, path, body, headers: { 'x-admin-api-key': adminKey } });
  await admin('POST', '/v1/admin/tenants', { tenant_id: cfg.tenant, name: 'Benchmark tenant' });
  const key = await admin('POST', '/v1/admin/api-keys', {
    tenant_id: cfg.tenant,
    name: 'bench',
    permissions: ['reservations:create', 'reservations:commit', 'reservations:release', 'reservations:list', 'balances:read'],
  });
  const budget = (scope, amount) =>
    admin('POST', '/v1/admin/budgets', { tenant_id: cfg.tenant, scope, unit: UNIT, allocated: { unit: UNIT, amount } });
  await budget(`tenant:${cfg.tenant}`, cfg.tenantAllocated);
  await parallelMap(cfg.agents, 16, (i) => budget(`tenant:${cfg.tenant}/agent:a${i}`, cfg.agentAllocated));
  return { apiKey: key.json.key_secret, keyId: key.json.key_id };
}

// ------------------------------------------------------------------------------ main

function summaryLine(r) {
  return `${r.scenario.padEnd(9)} c=${String(r.connections).padStart(3)}: ${fmtNum(r.throughput_rps)} req/s, ` +
    `p50 ${fmtMs(r.latency_ms.p50)} ms, p99 ${fmtMs(r.latency_ms.p99)} ms, errors ${r.errors}, ` +
    `ledger mismatches ${r.ledger.mismatches}` +
    (r.unanswered_settled.replayed ? `, settled ${r.unanswered_settled.replayed} in-flight` : '');
}

async function pooledRun(ctx, cfg, scenario, c, reserveRps) {
  // Size the pool from the best throughput seen so far at this concurrency (reserve, or an
  // earlier commit/release run), with a margin; if it still runs out, the run is redone.
  const seen = [reserveRps.get(c), ctx.pooledRps.get(c), 500].filter((v) => v !== undefined);
  let size = Math.ceil(Math.max(...seen) * cfg.poolMargin * (cfg.durationS + 1.5)) + 2 * c + 200;
  for (let attempt = 0; ; attempt += 1) {
    const pre = await precreate(ctx, size);
    log(`${scenario} c=${c}: pre-created ${pre.entries.length} reservations in ${pre.seconds.toFixed(1)} s` +
      (pre.failures ? ` (${pre.failures} failed)` : ''));
    const pool = new Pool(pre.entries);
    const r = await runScenario(ctx, scenario, c, { durationS: cfg.durationS, pool });
    r.pool.precreate_seconds = pre.seconds;
    r.pool.precreate_failures = pre.failures;
    if (!r.pool.exhausted) {
      ctx.pooledRps.set(c, Math.max(ctx.pooledRps.get(c) ?? 0, r.throughput_rps));
      return r;
    }
    if (attempt === 2) return r;
    log(`${scenario} c=${c}: the pool of ${pre.entries.length} ran out after ${r.duration_s} s; redoing with a larger pool`);
    ctx.discarded.push(r);
    size = Math.ceil(size * 3);
  }
}

function targets(cfg, runs, direct, warmup) {
  const at50 = (s) => runs.find((r) => r.scenario === s && r.connections === 50);
  const d50 = direct.find((d) => d.connections === 50);
  const r50 = at50('reserve');
  const out = [];
  const ratio = r50 && d50 ? r50.throughput_rps / d50.throughput_ops : undefined;
  out.push({
    name: 'reserve @50 conns >= 40% of Redis-bound',
    measured: ratio === undefined ? 'not measured' : `${(ratio * 100).toFixed(1)}% (${fmtNum(r50.throughput_rps)} / ${fmtNum(d50.throughput_ops)})`,
    met: ratio === undefined ? undefined : ratio >= 0.4,
  });
  for (const s of cfg.scenarios) {
    const r = at50(s);
    out.push({
      name: `p99 < 15 ms @50 conns: ${s}`,
      measured: r ? `${fmtMs(r.latency_ms.p99)} ms` : 'not measured',
      met: r ? r.latency_ms.p99 !== null && r.latency_ms.p99 < 15 : undefined,
    });
  }
  const errors = runs.reduce((s, r) => s + r.errors, 0) + direct.reduce((s, d) => s + d.errors, 0);
  out.push({ name: 'zero errors (all runs)', measured: String(errors), met: errors === 0 });
  const all = [...runs, ...direct, ...(warmup ? [warmup] : [])];
  const mismatches = all.reduce((s, r) => s + r.ledger.mismatches, 0);
  const checked = all.reduce((s, r) => s + r.ledger.checked, 0);
  out.push({ name: 'zero ledger mismatches (all runs)', measured: `${mismatches} of ${checked} checks`, met: mismatches === 0 });
  return out;
}

async function main() {
  const cfg = settings();
  const startedAt = new Date();
  const loadAtStart = os.loadavg();
  log(`duration ${cfg.durationS} s, connections ${cfg.connections.join(',')}, ${cfg.agents} agents, scenarios ${cfg.scenarios.join(',')}`);

  const redis = await startRedis();
  log(`redis-server ${redis.version} on 127.0.0.1:${redis.port} (private, no persistence)`);
  const adminKey = `bench-admin-${randomBytes(16).toString('hex')}`;
  const server = await startServer({ repoRoot: REPO, redisUrl: redis.url, adminKey });
  diagnostics.server = server.proc;
  diagnostics.redis = redis.proc;
  log(`server ready: runtime :${server.runtimePort}, admin :${server.adminPort}, events :${server.eventsPort}`);
  const { apiKey, keyId } = await provision(server, cfg, adminKey);
  log(`provisioned tenant ${cfg.tenant}, 1 tenant budget + ${cfg.agents} agent budgets`);

  const workload = new Workload({ tenant: cfg.tenant, agents: cfg.agents, apiKey, estimate: cfg.estimate, actual: cfg.actual, ttlMs: cfg.ttlMs });
  const lib = await loadDist(REPO);
  const ctx = { workload, server, lib, keyId, discarded: [], pooledRps: new Map() };
  const direct = openDirect(lib, redis.url);
  // A separate connection for INFO cpu, so the samples never queue behind benchmark traffic.
  ctx.redisClient = new Redis(redis.url, { maxRetriesPerRequest: 1, connectionName: 'cycles-bench-info' });

  const runs = [];
  const directRuns = [];
  let warmup;
  try {
    // Warm-up (JIT, connection pools); checked but not reported in the table.
    warmup = await runScenario(ctx, 'lifecycle', 10, { durationS: Math.min(2, cfg.durationS) });
    log(`warm-up: ${summaryLine(warmup)}`);

    const reserveRps = new Map();
    for (const scenario of cfg.scenarios) {
      for (const c of cfg.connections) {
        const r = scenario === 'commit' || scenario === 'release'
          ? await pooledRun(ctx, cfg, scenario, c, reserveRps)
          : await runScenario(ctx, scenario, c, { durationS: cfg.durationS });
        runs.push(r);
        log(summaryLine(r));
        if (scenario === 'reserve') {
          reserveRps.set(c, r.throughput_rps);
          // The Redis-bound run right after the HTTP run at the same concurrency, so that both
          // sides of the ratio see the same machine conditions.
          const d = await runRedisBound(ctx, direct, c, cfg.durationS);
          directRuns.push(d);
          log(`redis-bound c=${String(c).padStart(3)}: ${fmtNum(d.throughput_ops)} ops/s, p50 ${fmtMs(d.latency_ms.p50)} ms, ` +
            `p99 ${fmtMs(d.latency_ms.p99)} ms, errors ${d.errors}, ledger mismatches ${d.ledger.mismatches}`);
        }
      }
    }
  } finally {
    await direct.redis.quit().catch(() => direct.redis.disconnect());
    await ctx.redisClient.quit().catch(() => ctx.redisClient.disconnect());
  }

  // ---------------------------------------------------------------------------- report
  const serverReserve = new Map(runs.filter((r) => r.scenario === 'reserve').map((r) => [r.connections, r]));
  const ratioByConn = new Map();
  const ratios = directRuns.map((d) => {
    const s = serverReserve.get(d.connections);
    const ratio = s ? s.throughput_rps / d.throughput_ops : null;
    if (ratio !== null) ratioByConn.set(d.connections, ratio);
    return { connections: d.connections, server_rps: s?.throughput_rps ?? null, redis_bound_ops: d.throughput_ops, ratio };
  });
  const targetRows = targets(cfg, runs, directRuns, warmup);
  const m = machine(redis.version, loadAtStart);
  const serverLog = { lines_at_warn_or_above: server.proc.lineCount, tail: server.proc.lineCount ? tail(server.proc, 50) : '' };

  const out = [];
  out.push('');
  out.push(`Cycles benchmark - ${startedAt.toISOString()}`);
  out.push(`machine: ${m.cpu_count} x ${m.cpu_model}, ${(m.total_mem_bytes / 2 ** 30).toFixed(1)} GiB, ${m.platform} ${m.release}; node ${m.node_version}; redis ${m.redis_version}; autocannon ${m.autocannon_version}`);
  out.push(`load: ${cfg.durationS} s per run, pipelining 1, ${cfg.agents} agents (leaf budgets) + 1 tenant budget; estimate ${cfg.estimate}, actual ${cfg.actual} ${UNIT}`);
  out.push('Server, client (autocannon) and Redis share this machine; absolute numbers are machine-specific.');
  out.push('CPU% = CPU time of the server process / redis-server / this process (autocannon or the direct loops) during the timed run, 100 = one core.');
  const busy = m.load_avg_at_start[0] > m.cpu_count * 0.5;
  if (busy) {
    out.push(`WARNING: the machine was busy before the benchmark started (1-min load average ${m.load_avg_at_start[0].toFixed(2)} on ${m.cpu_count} CPUs);`);
    out.push('         other processes compete for the CPUs, so throughput and tail latency are understated and noisy.');
  }
  out.push('');
  out.push('HTTP scenarios (latency = 2xx responses; errors = non-2xx + timeouts + connection errors)');
  out.push(runsTable(runs, ratioByConn));
  out.push('');
  if (directRuns.length) {
    const ap = process.env.BENCH_DIRECT_AUTOPIPELINING;
    const client = ap === undefined || ap === '' ? "the server's createRedis client" : `ioredis with enableAutoPipelining=${ap === '1' || ap === 'true'} (BENCH_DIRECT_AUTOPIPELINING)`;
    out.push(`Redis-bound limit: RuntimeStore.reserve (reserve Lua script) called directly from Node over ${client}, N concurrent loops`);
    out.push(redisTable(directRuns, serverReserve));
    out.push('');
  }
  out.push('Targets (informational)');
  out.push(targetsTable(targetRows));
  out.push('');
  out.push(`server log lines at warn or above: ${serverLog.lines_at_warn_or_above}`);

  const resultsDir = join(HERE, 'results');
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `${startedAt.toISOString().replace(/:/g, '-')}.json`);
  const json = {
    started_at: startedAt.toISOString(),
    finished_at: new Date().toISOString(),
    config: { ...cfg, unit: UNIT },
    machine: m,
    server: { runtime_port: server.runtimePort, admin_port: server.adminPort, log: serverLog },
    warmup,
    runs,
    redis_bound: directRuns,
    ratios,
    targets: targetRows,
    discarded_runs: ctx.discarded,
  };
  writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`);
  out.push(`results written to ${relative(REPO, file)}`);
  process.stdout.write(`${out.join('\n')}\n`);
}

/** Child processes, for a useful message when a run fails. */
const diagnostics = {};
function describeChildren() {
  const lines = [];
  for (const [name, proc] of Object.entries(diagnostics)) {
    if (!proc) continue;
    lines.push(`${name}: ${proc.exited ? `exited (${proc.exitCode})` : 'running'}`);
    if (proc.lines.length) lines.push(`--- last ${name} output ---\n${tail(proc, 20)}`);
  }
  return lines.join('\n');
}

let stopping = false;
async function shutdown(code) {
  if (stopping) return;
  stopping = true;
  closeAgent();
  await stopAll();
  process.exit(code);
}
process.on('SIGINT', () => {
  log('interrupted; stopping redis-server and the server');
  void shutdown(130);
});
process.on('SIGTERM', () => void shutdown(143));

main().then(
  () => shutdown(0),
  (err) => {
    process.stderr.write(`[bench] failed: ${err?.stack ?? err}\n`);
    const children = describeChildren();
    if (children) process.stderr.write(`${children}\n`);
    void shutdown(1);
  },
);
