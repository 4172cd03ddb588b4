#!/usr/bin/env node
// Expiry backlog benchmark: `npm run bench:expiry` (builds first).
//
// Creates BENCH_EXPIRY_N abandoned reservations (ttl 1 s, grace 0) over BENCH_EXPIRY_TENANTS
// tenants on a private redis-server, waits until they are all due, then runs the expiry sweep
// (the same code the `expiry` job scheduler runs) until nothing is left, and reports:
//   - expirations per second over the whole backlog;
//   - how long Redis was blocked per script call: mean from INFO commandstats (evalsha), and the
//     slowest calls from SLOWLOG (threshold 1 ms), so "a few ms per batch" is measured, not assumed;
//   - that every hold went back (sum of `reserved` over all ledgers is 0);
//   - then the retention purge (ADR 0019) of the same 100,000 now-finalized records: a second
//     system on the same Redis with a 1 ms retention and replay window sweeps until every
//     tenant's record hash is empty; purges per second and Redis time per call as above.
// Results go to stdout and bench/results/expiry-<timestamp>.json.
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { startRedis, stopAll } from './lib/procs.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..');
const N = Number(process.env.BENCH_EXPIRY_N ?? 100_000);
const TENANTS = Number(process.env.BENCH_EXPIRY_TENANTS ?? 20);
const BATCH = Number(process.env.BENCH_EXPIRY_BATCH ?? 50);
const log = (m) => process.stderr.write(`[bench:expiry] ${m}\n`);

async function main() {
  const redis = await startRedis();
  log(`redis ${redis.version} on ${redis.url}`);
  const { createSystem } = await import(pathToFileURL(join(REPO, 'dist', 'system.js')).href);
  const system = await createSystem({
    redisUrl: redis.url, adminApiKey: 'bench', keyPrefix: 'bx', logger: pino({ level: 'silent' }), bodyLimitBytes: 65536,
    authCacheTtlMs: 1000, reservationRetentionMs: 86_400_000, expiryIntervalMs: 3_600_000, expiryBatchSize: BATCH,
  });
  try {
    const admin = { kind: 'admin' };
    const corr = { requestId: 'bench', traceId: randomBytes(16).toString('hex') };
    const tenants = [];
    for (let i = 0; i < TENANTS; i++) {
      const id = `bx-${i}-${randomBytes(3).toString('hex')}`;
      await system.admin.createTenant(admin, { tenant_id: id, name: id }, corr);
      for (const scope of [`tenant:${id}`, `tenant:${id}/workspace:w`]) {
        await system.admin.createBudget(admin, { tenant_id: id, scope, unit: 'USD_MICROCENTS', allocated: { unit: 'USD_MICROCENTS', amount: 1_000_000_000_000 } }, corr);
      }
      tenants.push(id);
    }
    log(`creating ${N} reservations over ${TENANTS} tenants`);
    const created0 = Date.now();
    let next = 0;
    const worker = async () => {
      for (;;) {
        const i = next++;
        if (i >= N) return;
        const t = tenants[i % TENANTS];
        const auth = { kind: 'tenant', tenantId: t, keyId: 'bench', permissions: ['reservations:create'], scopeFilter: [] };
        await system.runtime.reserve(auth, {
          idempotency_key: `r-${i}`, subject: { tenant: t, workspace: 'w' }, action: { kind: 'llm.completion', name: 'm' },
          estimate: { unit: 'USD_MICROCENTS', amount: 10 }, ttl_ms: 1000, grace_period_ms: 0,
        }, undefined, corr);
      }
    };
    await Promise.all(Array.from({ length: 256 }, worker));
    const createS = (Date.now() - created0) / 1000;
    log(`created in ${createS.toFixed(1)} s (${Math.round(N / createS)}/s); waiting until all are due`);
    await new Promise((r) => setTimeout(r, 1500));

    const r = system.redis;
    await r.config('SET', 'slowlog-log-slower-than', '1000');
    await r.config('SET', 'slowlog-max-len', '1024');
    await r.slowlog('RESET');
    await r.config('RESETSTAT');
    const t0 = process.hrtime.bigint();
    let expired = 0;
    let passes = 0;
    for (;;) {
      const n = await system.sweep.sweepOnce();
      passes += 1;
      expired += n;
      if (n === 0) break;
    }
    const sweepS = Number(process.hrtime.bigint() - t0) / 1e9;
    const stats = await r.info('commandstats');
    const evalsha = /cmdstat_evalsha:calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)/.exec(stats);
    const slow = await r.slowlog('GET', 1024);
    if (process.env.BENCH_DEBUG) for (const e of slow.slice(0, 5)) log(`slow ${e[2]}us ${JSON.stringify(e[3]).slice(0, 200)}`);
    const slowUs = slow.map((e) => Number(e[2])).sort((a, b) => b - a);
    let reserved = 0;
    for (const t of tenants) {
      for (const scope of [`tenant:${t}`, `tenant:${t}/workspace:w`]) {
        reserved += Number(await r.hget(system.keys.budget(t, scope, 'USD_MICROCENTS'), 'reserved'));
      }
    }
    // Purge: the records are EXPIRED; a system whose retention has passed for all of them.
    const purger = await createSystem({
      redisUrl: redis.url, adminApiKey: 'bench', keyPrefix: 'bx', logger: pino({ level: 'silent' }), bodyLimitBytes: 65536,
      authCacheTtlMs: 1000, reservationRetentionMs: 1, reserveReplayWindowMs: 1, expiryIntervalMs: 3_600_000, expiryBatchSize: BATCH,
    });
    const records = async () => (await Promise.all(tenants.map((t) => r.hlen(system.keys.reservations(t))))).reduce((a, b) => a + b, 0);
    const before = await records();
    await new Promise((res) => setTimeout(res, 50));
    await r.slowlog('RESET');
    await r.config('RESETSTAT');
    const p0 = process.hrtime.bigint();
    let purgePasses = 0;
    try {
      while ((await records()) > 0 && purgePasses < 1000) {
        await purger.sweep.sweepOnce();
        purgePasses += 1;
      }
    } finally {
      await purger.close();
    }
    const purgeS = Number(process.hrtime.bigint() - p0) / 1e9;
    const left = await records();
    const pstats = /cmdstat_evalsha:calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)/.exec(await r.info('commandstats'));
    const pslow = (await r.slowlog('GET', 1024)).map((e) => Number(e[2])).sort((a, b) => b - a);
    const logLeft = (await Promise.all(tenants.map((t) => r.xlen(system.keys.reservationLog(t))))).reduce((a, b) => a + b, 0);

    const result = {
      at: new Date().toISOString(),
      machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version, redis: redis.version },
      settings: { reservations: N, tenants: TENANTS, batchSize: BATCH },
      created_per_s: Math.round(N / createS),
      expired,
      passes,
      sweep_seconds: Number(sweepS.toFixed(2)),
      expirations_per_s: Math.round(expired / sweepS),
      script_calls: evalsha ? Number(evalsha[1]) : null,
      script_mean_ms: evalsha ? Number((Number(evalsha[3]) / 1000).toFixed(3)) : null,
      calls_over_1ms: slowUs.length,
      slowest_ms: slowUs.slice(0, 5).map((u) => Number((u / 1000).toFixed(2))),
      reserved_left: reserved,
      purge: {
        records_before: before,
        purged: before - left,
        passes: purgePasses,
        seconds: Number(purgeS.toFixed(2)),
        purged_per_s: Math.round((before - left) / purgeS),
        script_calls: pstats ? Number(pstats[1]) : null,
        script_mean_ms: pstats ? Number((Number(pstats[3]) / 1000).toFixed(3)) : null,
        calls_over_1ms: pslow.length,
        slowest_ms: pslow.slice(0, 5).map((u) => Number((u / 1000).toFixed(2))),
        records_left: left,
        log_entries_left: logLeft,
      },
    };
    mkdirSync(join(HERE, 'results'), { recursive: true });
    const file = join(HERE, 'results', `expiry-${result.at.replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    log(`written ${file}`);
    if (expired !== N || reserved !== 0 || left !== 0 || logLeft !== 0) {
      log(`FAILED: expired ${expired} of ${N}, reserved left ${reserved}, records left ${left}, log entries left ${logLeft}`);
      process.exitCode = 1;
    }
  } finally {
    await system.close();
    await stopAll();
  }
}

main().catch(async (err) => {
  log(err.stack ?? String(err));
  await stopAll();
  process.exit(1);
});
