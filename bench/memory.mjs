#!/usr/bin/env node
// Redis memory benchmark: `npm run bench:memory` (builds first).
//
// Reservation layout (ADR 0019, docs/decisions/0019-reservation-records.md; src/store/keys.ts):
// a reservation is no key of its own but one entry in each of four per-tenant containers:
//   P:{t}:rs    hash    short id (12 chars) -> MessagePack record (one-letter keys)
//   P:{t}:rlog  stream  one entry per reservation (r -> short id), entry id = created ms
//   P:{t}:exp   zset    ACTIVE short ids scored by expires_at + grace
//   P:{t}:ik    hash    12-char digest of the idempotency key -> short id (live reserve idempotency;
//                       the record itself holds the key and the payload hash)
// (plus P:{t}:rlogc, the purge cursor). Finalized records stay until the expiry sweep purges them
// after the retention period (no key TTL).
//
// On a private redis-server (bench/lib/procs.mjs), through the real code paths of dist/system.js:
//   1. tenants, then budget ledgers at three levels (tenant / workspace / agent);
//   2. BENCH_MEMORY_RESERVATIONS active reservations (ttl 1 h) through system.runtime.reserve, spread
//      over every agent of every tenant (each reserve holds on 3 ledgers), measured with everything
//      a live reserve writes (rs record, rlog, exp and ik entries: the headline figure, target
//      <= 600 B), then again after deleting the tenants' P:{t}:ik hashes (which hold only the
//      bench's reservations at that point; checked), giving the cost of the idempotency index
//      entry; the ik hashes are then restored (DUMP/RESTORE) so later phases see the real layout;
//   3. a variant with request metadata (stored in the record, which grows by its size);
//   4. committed reservations kept for the retention period (the record after commit: commit
//      fields added, expiry index entry removed; rs, rlog and ik entries stay until the purge);
//   5. stored events and delivery records through the real pipeline: webhook subscriptions
//      (loopback allowed through PUT /v1/admin/config/webhook-security on system.buildAdminApp()),
//      live budget denials (reservation.denied, no idempotency record), system.startEventsService(),
//      waiting until every delivery reached a local HTTP receiver and is SUCCESS. Half the
//      denials go to tenants with one subscription, half to tenants with two, so the per-event and
//      per-delivery figures both come from used_memory deltas. BullMQ's retained completed jobs
//      and event streams are measured, then cleaned, so they do not blur the Cycles figures.
// Every figure is a used_memory delta (INFO memory, after a settle; client buffers,
// mem_clients_normal, left out; latency-tracking off so first-use per-command histograms do not
// count), divided by the count. The per-tenant containers are hash tables (rs, ik, exp's dict)
// that double their bucket arrays (8 B a bucket) and rehash only as they are written, so the
// per-reservation figures move by some tens of bytes with the number of reservations per tenant. The cross-checks are MEMORY USAGE (SAMPLES 0 = exact): of the four reservation
// containers summed over the tenants and divided by the number of reservations, and of every key
// grouped by key type (where the bytes go); plus the encoded record sizes (HSTRLEN).
// Results: stdout (table) and bench/results/memory-<timestamp>.json.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { startRedis, stopAll } from './lib/procs.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..');
const env = (name, dflt) => Number(process.env[name] ?? dflt);
const N = env('BENCH_MEMORY_RESERVATIONS', 100_000);
const TENANTS = env('BENCH_MEMORY_TENANTS', 100);
const WORKSPACES = env('BENCH_MEMORY_WORKSPACES', 9); // per tenant
const AGENTS = env('BENCH_MEMORY_AGENTS', 10); // per workspace
const META_N = env('BENCH_MEMORY_META_RESERVATIONS', 2_000);
const COMMITS = env('BENCH_MEMORY_COMMITS', 10_000);
const EVENTS = env('BENCH_MEMORY_EVENTS', 10_000);
const CONCURRENCY = env('BENCH_MEMORY_CONCURRENCY', 128);
// Redis settings applied with CONFIG SET before the run, e.g. "hash-max-listpack-value=128".
const REDIS_CONFIG = (process.env.BENCH_MEMORY_REDIS_CONFIG ?? '').split(',').filter(Boolean).map((kv) => kv.split('='));
const PREFIX = 'bm';
const UNIT = 'USD_MICROCENTS';
const LEDGERS_PER_TENANT = 1 + WORKSPACES + WORKSPACES * AGENTS;
const LEDGERS = TENANTS * LEDGERS_PER_TENANT;
const log = (m) => process.stderr.write(`[bench:memory] ${m}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const admin = { kind: 'admin' };
const corr = () => ({ requestId: `req_bench_${randomBytes(4).toString('hex')}`, traceId: randomBytes(16).toString('hex') });
const tenantAuth = (t) => ({ kind: 'tenant', tenantId: t, keyId: 'key_bench', permissions: ['reservations:create', 'reservations:commit'], scopeFilter: [] });

/** Runs fn(i) for i in [0, n) with `concurrency` workers. */
async function parallel(n, concurrency, fn) {
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
}

/**
 * Key type of a key name, for the MEMORY USAGE breakdown (layout in src/store/keys.ts): tenant-slot
 * keys group by the name part after `}:` (`{t}:rs`, `{t}:rlog`, `{t}:rlogc`, `{t}:exp`, `{t}:ik`,
 * `{t}:b`, ...), idempotency records by endpoint (`{t}:i:reserve`, `{t}:i:decide`, ...).
 */
function keyType(key) {
  if (key.startsWith(`{${PREFIX}:q}:`)) {
    const rest = key.slice(PREFIX.length + 5);
    const [queue, part] = rest.split(':');
    return `bullmq:${queue}:${/^\d+$/.test(part ?? '') ? '<job>' : part ?? ''}`;
  }
  if (key.startsWith(`${PREFIX}:{`)) {
    const close = key.indexOf('}:');
    const tag = key.slice(PREFIX.length + 2, close);
    const rest = key.slice(close + 2).split(':');
    if (tag === 'audit') return `{audit}:${rest[0]}`;
    if (rest[0] === 'i') return `{t}:i:${rest[1]}`;
    return `{t}:${rest[0]}`;
  }
  const rest = key.slice(PREFIX.length + 1).split(':');
  if (rest[0] === 'events') return `events:${rest[1] === '_all' ? '_all' : rest[1]}`;
  return rest[0];
}

/** MEMORY USAGE (SAMPLES 0 = exact) of every key, grouped by type, plus encodings seen. */
async function breakdown(r) {
  const types = new Map();
  let cursor = '0';
  do {
    const [c, keys] = await r.scan(cursor, 'COUNT', 2000);
    cursor = c;
    if (keys.length === 0) continue;
    const p = r.pipeline();
    for (const k of keys) {
      p.call('MEMORY', 'USAGE', k, 'SAMPLES', '0');
      p.call('OBJECT', 'ENCODING', k);
      p.pttl(k);
    }
    const res = await p.exec();
    keys.forEach((k, i) => {
      const bytes = Number(res[i * 3][1] ?? 0);
      const enc = String(res[i * 3 + 1][1]);
      const ttl = Number(res[i * 3 + 2][1]);
      const t = keyType(k);
      const s = types.get(t) ?? { keys: 0, bytes: 0, with_ttl: 0, encodings: {} };
      s.keys += 1;
      s.bytes += bytes;
      if (ttl >= 0) s.with_ttl += 1;
      s.encodings[enc] = (s.encodings[enc] ?? 0) + 1;
      types.set(t, s);
    });
  } while (cursor !== '0');
  const out = {};
  for (const [t, s] of [...types.entries()].sort((a, b) => b[1].bytes - a[1].bytes)) {
    out[t] = { ...s, avg_bytes: Math.round(s.bytes / s.keys) };
  }
  return out;
}

async function main() {
  const redis = await startRedis();
  log(`redis ${redis.version} on ${redis.url}`);
  {
    const { Redis } = await import('ioredis');
    const c = new Redis(redis.url);
    // Redis 7 allocates a latency histogram (~25 KB) the first time each command runs; off, so
    // that first uses (DUMP, XLEN, OBJECT, ... of the checks) do not show up in the deltas.
    await c.config('SET', 'latency-tracking', 'no').catch(() => log('latency-tracking not settable (Redis < 7)'));
    for (const [k, v] of REDIS_CONFIG) await c.config('SET', k, v);
    c.disconnect();
    if (REDIS_CONFIG.length > 0) log(`CONFIG SET ${REDIS_CONFIG.map(([k, v]) => `${k} ${v}`).join(', ')}`);
  }
  const { createSystem } = await import(pathToFileURL(join(REPO, 'dist', 'system.js')).href);
  const system = await createSystem({
    redisUrl: redis.url, adminApiKey: 'bench-admin-key', keyPrefix: PREFIX, logger: pino({ level: 'silent' }), bodyLimitBytes: 65536,
    authCacheTtlMs: 1000, reservationRetentionMs: 86_400_000, expiryIntervalMs: 3_600_000, expiryBatchSize: 200,
    reconcileIntervalMs: 3_600_000, retentionIntervalMs: 3_600_000,
  });
  const r = system.redis;
  const receiver = { count: 0, server: undefined, url: '' };
  try {
    const used = async () => {
      await sleep(Number(process.env.BENCH_MEMORY_SETTLE_MS ?? 1500)); // let the keyspace's incremental rehashing finish
      const info = await r.info('memory');
      // Client query and reply buffers (mem_clients_normal, tens of KB that come and go with the
      // bench's own pipelines) are not data: left out, or they swing the small-count figures.
      const clients = Number(/mem_clients_normal:(\d+)/.exec(info)?.[1] ?? 0);
      return Number(/used_memory:(\d+)/.exec(info)[1]) - clients;
    };
    const dbsize = () => r.dbsize();
    const scanDel = async (match) => {
      let cursor = '0';
      let n = 0;
      do {
        const [c, keys] = await r.scan(cursor, 'MATCH', match, 'COUNT', 2000);
        cursor = c;
        if (keys.length > 0) n += await r.del(...keys);
      } while (cursor !== '0');
      return n;
    };
    const outboxBytes = async () => {
      let total = 0;
      for (const t of tenants) total += Number((await r.call('MEMORY', 'USAGE', system.keys.outbox(t), 'SAMPLES', '0')) ?? 0);
      return total;
    };
    const rows = [];
    const per = (label, delta, count, note = '') => {
      const row = { item: label, count, delta_bytes: delta, bytes_each: Math.round(delta / count), note };
      rows.push(row);
      log(`${label}: ${row.bytes_each} B each (${count} items, ${delta} B)`);
      return row.bytes_each;
    };

    // --- 1. tenants and ledgers -------------------------------------------------------------
    // Warm-up on a tenant of its own: loads the scripts and first-use structures so that they do
    // not count against the first measured items.
    {
      const w = `warmup-${randomBytes(3).toString('hex')}`;
      await system.admin.createTenant(admin, { tenant_id: w, name: w }, corr());
      await system.admin.createBudget(admin, { tenant_id: w, scope: `tenant:${w}`, unit: UNIT, allocated: { unit: UNIT, amount: 1_000_000 } }, corr());
      const res = await system.runtime.reserve(tenantAuth(w), { idempotency_key: randomUUID(), subject: { tenant: w }, action: { kind: 'llm.completion', name: 'm' },
        estimate: { unit: UNIT, amount: 1 }, ttl_ms: 60_000 }, undefined, corr());
      await system.runtime.commit(tenantAuth(w), res.reservation_id, { idempotency_key: randomUUID(), actual: { unit: UNIT, amount: 1 } }, undefined, corr());
    }
    const m0 = await used();
    const keys0 = await dbsize();
    const tenants = [];
    for (let i = 0; i < TENANTS; i++) {
      const id = `acme-${String(i).padStart(4, '0')}-${randomBytes(3).toString('hex')}`;
      await system.admin.createTenant(admin, { tenant_id: id, name: `Tenant ${id}` }, corr());
      tenants.push(id);
    }
    const m1 = await used();
    const ob1 = await outboxBytes();
    per('tenant record (+ registry entry)', m1 - m0 - ob1, TENANTS, `outbox growth ${ob1} B (tenant.created events, relayed later) excluded`);
    const scopes = (t) => {
      const out = [{ scope: `tenant:${t}` }];
      for (let w = 0; w < WORKSPACES; w++) {
        out.push({ scope: `tenant:${t}/workspace:ws-${w}` });
        for (let a = 0; a < AGENTS; a++) out.push({ scope: `tenant:${t}/workspace:ws-${w}/agent:agent-${w}-${a}`, ws: w, agent: a });
      }
      return out;
    };
    log(`creating ${LEDGERS} ledgers (${TENANTS} tenants x ${LEDGERS_PER_TENANT}: tenant, ${WORKSPACES} workspaces, ${WORKSPACES * AGENTS} agents)`);
    const allScopes = tenants.flatMap((t) => scopes(t).map((s) => ({ ...s, t })));
    await parallel(allScopes.length, 32, async (i) => {
      const s = allScopes[i];
      await system.admin.createBudget(admin, { tenant_id: s.t, scope: s.scope, unit: UNIT, allocated: { unit: UNIT, amount: 1_000_000_000_000 } }, corr());
    });
    const m2 = await used();
    const ob2 = await outboxBytes();
    const ledgerBytes = per('budget ledger (hash + budgets index + bunits entry)', m2 - m1 - (ob2 - ob1), LEDGERS,
      `outbox growth ${ob2 - ob1} B (events of budget creation, relayed later) excluded`);
    const afterLedgers = await breakdown(r);

    // --- 2. active reservations --------------------------------------------------------------
    const agents = allScopes.filter((s) => s.agent !== undefined);
    const subjectOf = (s) => ({ tenant: s.t, workspace: `ws-${s.ws}`, agent: `agent-${s.ws}-${s.agent}` });
    const ridsByIndex = new Array(N);
    const reserve = async (i, extra = {}) => {
      const s = agents[i % agents.length];
      const res = await system.runtime.reserve(tenantAuth(s.t), {
        idempotency_key: randomUUID(), subject: subjectOf(s), action: { kind: 'llm.completion', name: 'gpt-4o-mini' },
        estimate: { unit: UNIT, amount: 2500 }, ttl_ms: 3_600_000, grace_period_ms: 5000, ...extra,
      }, undefined, corr());
      if (res.decision !== 'ALLOW') throw new Error(`reserve ${i}: ${JSON.stringify(res)}`);
      return res.reservation_id;
    };
    log(`creating ${N} reservations`);
    const t0 = Date.now();
    await parallel(N, CONCURRENCY, async (i) => { ridsByIndex[i] = await reserve(i); });
    log(`created in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const m3 = await used();
    const ob3 = await outboxBytes();
    const withIdem = per('active reservation, with idempotency record (rs, rlog, exp, ik entries)', m3 - m2 - (ob3 - ob2), N);
    const keys3 = await dbsize();
    const tenantOf = (rid) => rid.slice(4, rid.lastIndexOf('_'));
    const shortOf = (rid) => rid.slice(rid.lastIndexOf('_') + 1);
    const perTenant = new Map(tenants.map((t) => [t, 0]));
    for (const rid of ridsByIndex) perTenant.set(tenantOf(rid), perTenant.get(tenantOf(rid)) + 1);
    // The four containers of every tenant, with their entry counts: each must hold exactly the
    // bench's reservations of that tenant (so deleting P:{t}:ik below removes only those entries).
    const containers = { rs: 'reservations', rlog: 'reservationLog', exp: 'expiryIndex', ik: 'reserveIdempotencyIndex' };
    const containerBytes = async () => {
      const out = {};
      for (const [name, fn] of Object.entries(containers)) {
        const p = r.pipeline();
        for (const t of tenants) p.call('MEMORY', 'USAGE', system.keys[fn](t), 'SAMPLES', '0');
        out[name] = (await p.exec()).reduce((sum, [, v]) => sum + Number(v ?? 0), 0);
      }
      return out;
    };
    const containerInfo = {};
    {
      const p = r.pipeline();
      for (const t of tenants) {
        p.hlen(system.keys.reservations(t));
        p.xlen(system.keys.reservationLog(t));
        p.zcard(system.keys.expiryIndex(t));
        p.hlen(system.keys.reserveIdempotencyIndex(t));
      }
      const res = await p.exec();
      tenants.forEach((t, i) => {
        const [rs, rlog, exp, ik] = res.slice(i * 4, i * 4 + 4).map(([, v]) => Number(v));
        const want = perTenant.get(t);
        if (rs !== want || rlog !== want || exp !== want || ik !== want) {
          throw new Error(`tenant ${t}: expected ${want} reservations in rs/rlog/exp/ik, found ${rs}/${rlog}/${exp}/${ik}`);
        }
      });
      for (const [name, fn] of Object.entries(containers)) {
        const encodings = {};
        for (const t of tenants) {
          const enc = String(await r.call('OBJECT', 'ENCODING', system.keys[fn](t)));
          encodings[enc] = (encodings[enc] ?? 0) + 1;
        }
        containerInfo[name] = { key: system.keys[fn]('<t>'), encodings };
      }
    }
    const muRes = await containerBytes();
    // Without the idempotency index: the tenants' P:{t}:ik hashes hold exactly the bench's
    // reservations (checked above), so deleting them removes one ik entry per reservation. They are
    // restored right after (DUMP/RESTORE), so the later phases write into the real layout. Nothing
    // but the deletion happens between m3b and m4; m3b - m3 (no data changed: buffers of the checks
    // above) is reported as drift and kept out of the "without" figure.
    log('deleting the tenants\' reserve idempotency index hashes (P:{t}:ik), keeping DUMPs to restore them');
    const ikDumps = [];
    let ikEntries = 0;
    for (const t of tenants) {
      const key = system.keys.reserveIdempotencyIndex(t);
      ikEntries += await r.hlen(key);
      ikDumps.push([key, await r.dumpBuffer(key)]);
    }
    const m3b = await used();
    await r.del(...ikDumps.map(([k]) => k));
    const m4 = await used();
    const drift = m3b - m3;
    const withoutIdem = per('active reservation, without idempotency record (ik deleted)', m4 - drift - m2 - (ob3 - ob2), N,
      `${ikDumps.length} P:{t}:ik hashes deleted (${ikEntries} entries); used_memory drift before the deletion ${drift} B excluded`);
    const ikEach = per('reserve idempotency index entry (P:{t}:ik field)', m3b - m4, ikEntries, 'with minus without');
    for (const [key, dump] of ikDumps) await r.restore(key, 0, dump);
    const m4r = await used();
    log(`ik hashes restored: used_memory ${m4r - m3b >= 0 ? '+' : ''}${m4r - m3b} B against just before the deletion (drift before it: ${drift} B)`);
    const afterReservations = await breakdown(r);
    const ikRestored = (await containerBytes()).ik;
    if (ikRestored !== muRes.ik) log(`MEMORY USAGE of the ik hashes: ${muRes.ik} B before the deletion, ${ikRestored} B restored (RESTORE sizes a table for its length; one mid-rehash holds two)`);
    // Encoded record sizes: HSTRLEN of a sample of rs fields, and the largest entries of one record
    // (approximate MessagePack bytes of key + value; the record is one value of the rs hash).
    const { decodeMsgpack } = await import(pathToFileURL(join(REPO, 'dist', 'store', 'reservation-codec.js')).href);
    const mpLen = (v) => {
      if (typeof v === 'string') {
        const n = Buffer.byteLength(v);
        return n + (n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5);
      }
      if (typeof v === 'number') {
        if (!Number.isInteger(v)) return 9;
        const a = Math.abs(v);
        return a < 128 ? 1 : a < 256 ? 2 : a < 65536 ? 3 : a < 2 ** 32 ? 5 : 9;
      }
      return 1;
    };
    const recordSizes = async (rids) => {
      const p = r.pipeline();
      for (const rid of rids) p.hstrlen(system.keys.reservations(tenantOf(rid)), shortOf(rid));
      const lens = (await p.exec()).map(([, v]) => Number(v));
      const raw = decodeMsgpack(await r.hgetBuffer(system.keys.reservations(tenantOf(rids[0])), shortOf(rids[0])));
      return {
        samples: lens.length, avg_bytes: Math.round(lens.reduce((a, b) => a + b, 0) / lens.length),
        min_bytes: Math.min(...lens), max_bytes: Math.max(...lens),
        status: raw.s, largest_entries: Object.entries(raw).map(([k, v]) => [k, 1 + mpLen(v)]).sort((a, b) => b[1] - a[1]).slice(0, 5),
        entries: Object.keys(raw).length,
      };
    };
    const sampleStep = Math.max(1, Math.floor(N / 500));
    const activeRecord = await recordSizes(ridsByIndex.filter((_, i) => i % sampleStep === 0).slice(0, 500));
    log(`active record: ${JSON.stringify(activeRecord)}`);

    // --- 3. reservations with metadata (stored in the record) ----------------------------------
    let metaEach = null;
    let metaSample = null;
    if (META_N > 0) {
      const meta = { run_id: randomUUID(), prompt: 'summarize the quarterly report for the finance team', model_params: { temperature: 0.2, max_tokens: 1024 } };
      const metaRids = [];
      // Spread evenly over the tenants (i-th goes to tenant i % TENANTS), so that no few tenants'
      // containers cross a hash-table doubling and blur the per-reservation figure.
      const perT = WORKSPACES * AGENTS;
      const spread = (i) => (i % TENANTS) * perT + (Math.floor(i / TENANTS) % perT);
      await parallel(META_N, CONCURRENCY, async (i) => { metaRids.push(await reserve(spread(i), { metadata: meta })); });
      const m5 = await used();
      metaEach = per(`active reservation with ${JSON.stringify(meta).length}-byte metadata, with idempotency record`, m5 - m4r, META_N);
      metaSample = { metadata_bytes: JSON.stringify(meta).length, plain: activeRecord, with_metadata: await recordSizes(metaRids.slice(0, 500)) };
      log(`record with metadata: ${JSON.stringify(metaSample.with_metadata)}`);
      // They stay (active, with their idempotency index entries); what follows is measured as deltas.
    }

    // --- 4. committed reservations kept for the retention period ------------------------------
    let committedEach = null;
    let committedRecord = null;
    if (COMMITS > 0) {
      const nCommits = Math.min(COMMITS, N);
      const exp6 = (await containerBytes()).exp;
      const m6 = await used();
      const ob6 = await outboxBytes();
      await parallel(nCommits, CONCURRENCY, async (i) => {
        const rid = ridsByIndex[i];
        await system.runtime.commit(tenantAuth(tenantOf(rid)), rid, { idempotency_key: randomUUID(), actual: { unit: UNIT, amount: 2000 } }, undefined, corr());
      });
      const m7 = await used();
      const ob7 = await outboxBytes();
      const delta = per('commit of an active reservation (change)', m7 - m6 - (ob7 - ob6), nCommits,
        'record gains commit fields, leaves exp; rs, rlog and ik entries stay until the retention purge');
      committedEach = withIdem + delta;
      committedRecord = await recordSizes(ridsByIndex.slice(0, Math.min(500, nCommits)));
      committedRecord.exp_memory_usage_change_each = Math.round(((await containerBytes()).exp - exp6) / nCommits);
      // What the figure stands for: committed records out of the expiry index, still in rs.
      const p = r.pipeline();
      for (const rid of ridsByIndex.slice(0, nCommits)) {
        p.zscore(system.keys.expiryIndex(tenantOf(rid)), shortOf(rid));
        p.hexists(system.keys.reservations(tenantOf(rid)), shortOf(rid));
      }
      const checks = await p.exec();
      const inExp = checks.filter(([, v], i) => i % 2 === 0 && v !== null).length;
      const inRs = checks.filter(([, v], i) => i % 2 === 1 && Number(v) === 1).length;
      if (inExp > 0 || inRs !== nCommits) throw new Error(`committed: ${inExp} still in exp, ${inRs}/${nCommits} in rs`);
      log(`committed record: ${JSON.stringify(committedRecord)}`);
    }

    // --- 5. events and deliveries through the pipeline ----------------------------------------
    let eventFigures = null;
    if (EVENTS > 0) {
      receiver.server = http.createServer((req, res) => {
        req.resume();
        req.on('end', () => {
          receiver.count += 1;
          res.statusCode = 204;
          res.end();
        });
      });
      await new Promise((ok) => receiver.server.listen(0, '127.0.0.1', ok));
      receiver.url = `http://127.0.0.1:${receiver.server.address().port}/hook`;
      const app = await system.buildAdminApp();
      const adminHeaders = { 'x-admin-api-key': 'bench-admin-key' };
      const put = await app.inject({ method: 'PUT', url: '/v1/admin/config/webhook-security', headers: adminHeaders,
        payload: { allow_http: true, blocked_cidr_ranges: [], allowed_url_patterns: [] } });
      if (put.statusCode !== 200) throw new Error(`webhook-security: ${put.statusCode} ${put.body}`);
      const half = Math.floor(tenants.length / 2);
      const groupA = tenants.slice(0, half); // one subscription each
      const groupB = tenants.slice(half); // two subscriptions each
      for (const [group, subs] of [[groupA, 1], [groupB, 2]]) {
        for (const t of group) {
          for (let k = 0; k < subs; k++) {
            const res = await app.inject({ method: 'POST', url: `/v1/admin/webhooks?tenant_id=${t}`, headers: adminHeaders,
              payload: { url: receiver.url, event_types: ['reservation.denied'], signing_secret: `whsec_${randomBytes(16).toString('hex')}` } });
            if (res.statusCode !== 201) throw new Error(`subscribe: ${res.statusCode} ${res.body}`);
          }
        }
      }
      await app.close();
      const service = await system.startEventsService();
      const queues = service.queues;
      const idle = async (expectedReceived, what) => {
        const deadline = Date.now() + 600_000;
        for (;;) {
          const counts = await service.queueCounts();
          let busy = 0;
          for (const q of ['relay', 'deliveries']) busy += counts[q].waiting + counts[q].active + counts[q].delayed + counts[q].prioritized;
          let outbox = 0;
          for (const t of tenants) outbox += await r.xlen(system.keys.outbox(t));
          if (busy === 0 && outbox === 0 && receiver.count >= expectedReceived) return counts;
          if (Date.now() > deadline) throw new Error(`${what}: not idle (busy ${busy}, outbox ${outbox}, received ${receiver.count}/${expectedReceived})`);
          await sleep(200);
        }
      };
      /** used_memory with BullMQ's retained completed jobs and event streams, then without. */
      const measureClean = async () => {
        const withBull = await used();
        let jobs = 0;
        for (const q of Object.values(queues)) jobs += (await q.clean(0, 1_000_000, 'completed')).length;
        for (const q of Object.keys(queues)) await r.xtrim(`{${PREFIX}:q}:${q}:events`, 'MAXLEN', 0);
        const clean = await used();
        return { withBull, clean, jobs };
      };
      log('events service: relaying the budget-creation events first (baseline)');
      await idle(0, 'baseline');
      const e0 = await measureClean();
      const deny = async (t, i) => {
        const s = agents[(tenants.indexOf(t) * LEDGERS_PER_TENANT + i) % agents.length];
        try {
          await system.runtime.reserve(tenantAuth(t), {
            idempotency_key: randomUUID(), subject: { ...subjectOf(s), tenant: t }, action: { kind: 'llm.completion', name: 'gpt-4o-mini' },
            estimate: { unit: UNIT, amount: 10_000_000_000_000 }, ttl_ms: 60_000,
          }, undefined, corr());
          throw new Error('expected a denial');
        } catch (err) {
          if (err.code !== 'BUDGET_EXCEEDED') throw err;
        }
      };
      const nA = Math.floor(EVENTS / 2);
      const nB = EVENTS - nA;
      log(`${nA} denials on ${groupA.length} tenants with 1 subscription`);
      await parallel(nA, 32, (i) => deny(groupA[i % groupA.length], i));
      const cA = await idle(nA, 'batch A');
      const e1 = await measureClean();
      log(`${nB} denials on ${groupB.length} tenants with 2 subscriptions`);
      await parallel(nB, 32, (i) => deny(groupB[i % groupB.length], i));
      const cB = await idle(nA + 2 * nB, 'batch B');
      const e2 = await measureClean();
      const afterEvents = await breakdown(r);
      // Every delivery record must be SUCCESS (the figures are for finished deliveries).
      let success = 0;
      let records = 0;
      let cursor = '0';
      do {
        const [c, keys] = await r.scan(cursor, 'MATCH', `${PREFIX}:{*}:dl:*`, 'COUNT', 2000);
        cursor = c;
        if (keys.length === 0) continue;
        const p = r.pipeline();
        for (const k of keys) p.hget(k, 'status');
        for (const [, st] of await p.exec()) {
          records += 1;
          if (st === 'SUCCESS') success += 1;
        }
      } while (cursor !== '0');
      const aEach = (e1.clean - e0.clean) / nA; // event + 1 delivery
      const bEach = (e2.clean - e1.clean) / nB; // event + 2 deliveries
      const delivery = Math.round(bEach - aEach);
      const event = Math.round(aEach - delivery);
      rows.push({ item: 'stored event (event JSON + tenant and _all index entries)', count: nA + nB, delta_bytes: null, bytes_each: event, note: 'from the two batches: A = event + delivery, B = event + 2 deliveries' });
      rows.push({ item: 'delivery record (hash + per-subscription index entry)', count: nA + 2 * nB, delta_bytes: null, bytes_each: delivery, note: 'finished (SUCCESS) records' });
      rows.push({ item: 'event with 1 delivery (batch A)', count: nA, delta_bytes: e1.clean - e0.clean, bytes_each: Math.round(aEach), note: '' });
      rows.push({ item: 'event with 2 deliveries (batch B)', count: nB, delta_bytes: e2.clean - e1.clean, bytes_each: Math.round(bEach), note: '' });
      const bullEach = Math.round(((e1.withBull - e1.clean) + (e2.withBull - e2.clean)) / (e1.jobs + e2.jobs));
      rows.push({ item: 'BullMQ completed job kept (removeOnComplete) + event-stream entries', count: e1.jobs + e2.jobs, delta_bytes: (e1.withBull - e1.clean) + (e2.withBull - e2.clean), bytes_each: bullEach, note: 'cleaned before each measurement; bounded by removeOnComplete count/age' });
      log(`event ${event} B, delivery ${delivery} B, BullMQ retained job ${bullEach} B; records ${records}, SUCCESS ${success}; received ${receiver.count}`);
      eventFigures = { event, delivery, event_plus_1_delivery: Math.round(aEach), event_plus_2_deliveries: Math.round(bEach), bullmq_retained_job: bullEach,
        batches: { a: { events: nA, deliveries: nA, counts: cA }, b: { events: nB, deliveries: 2 * nB, counts: cB } },
        delivery_records: records, delivery_records_success: success, received: receiver.count, breakdown: afterEvents,
        loopback: 'PUT /v1/admin/config/webhook-security {allow_http:true} via system.buildAdminApp().inject' };
      if (success !== nA + 2 * nB) throw new Error(`expected ${nA + 2 * nB} SUCCESS delivery records, found ${success} of ${records}`);
    }

    // --- cross-check and report ----------------------------------------------------------------
    // MEMORY USAGE of each bench tenant's containers right after the reservations, summed, / N.
    const muPer = {
      'rs (records hash)': Math.round(muRes.rs / N),
      'rlog (log stream)': Math.round(muRes.rlog / N),
      'exp (expiry zset)': Math.round(muRes.exp / N),
      'ik (idempotency index)': Math.round(muRes.ik / N),
    };
    muPer.total = Math.round((muRes.rs + muRes.rlog + muRes.exp + muRes.ik) / N);
    const lb = afterLedgers;
    const ledgerMu = {
      ledger_hash: Math.round((lb['{t}:b']?.bytes ?? 0) / LEDGERS),
      budgets_index: Math.round((lb['{t}:budgets']?.bytes ?? 0) / LEDGERS),
      bunits: Math.round((lb['{t}:bunits']?.bytes ?? 0) / LEDGERS),
    };
    const infoEnd = await r.info('memory');
    const infoField = (f) => /^[\d.]+$/.test(new RegExp(`${f}:([^\r\n]+)`).exec(infoEnd)?.[1] ?? '') ? Number(new RegExp(`${f}:([^\r\n]+)`).exec(infoEnd)[1]) : null;
    const result = {
      at: new Date().toISOString(),
      memory_at_end: { used_memory: infoField('used_memory'), used_memory_rss: infoField('used_memory_rss'), mem_fragmentation_ratio: infoField('mem_fragmentation_ratio'), keys: await dbsize() },
      machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version, redis: redis.version, allocator: /mem_allocator:([^\r\n]+)/.exec(await r.info('memory'))?.[1] },
      settings: { reservations: N, tenants: TENANTS, workspaces_per_tenant: WORKSPACES, agents_per_workspace: AGENTS, ledgers: LEDGERS,
        ledgers_held_per_reservation: 3, metadata_reservations: META_N, commits: COMMITS, events: EVENTS,
        reservations_per_tenant: Math.round(N / TENANTS), key_prefix: PREFIX, redis_config: Object.fromEntries(REDIS_CONFIG),
        zset_max_listpack_entries: (await r.config('GET', 'zset-max-listpack-entries'))[1],
        latency_tracking: (await r.config('GET', 'latency-tracking'))[1] ?? null,
        hash_max_listpack_entries: (await r.config('GET', 'hash-max-listpack-entries'))[1],
        hash_max_listpack_value: (await r.config('GET', 'hash-max-listpack-value'))[1],
        stream_node_max_entries: (await r.config('GET', 'stream-node-max-entries'))[1],
        stream_node_max_bytes: (await r.config('GET', 'stream-node-max-bytes'))[1] },
      target_bytes_per_active_reservation: 600,
      per_active_reservation: { with_idempotency_record: withIdem, without_idempotency_record: withoutIdem, reserve_idempotency_index_entry: ikEach,
        memory_usage_cross_check: muPer, memory_usage_totals: muRes, containers: containerInfo, used_memory_drift_before_ik_deletion: drift, ik_restore_used_memory_change: m4r - m3b },
      per_active_reservation_with_metadata: metaEach,
      record_sizes: { active: activeRecord, metadata: metaSample, committed: committedRecord },
      per_committed_reservation_in_retention: committedEach,
      per_ledger: ledgerBytes,
      per_ledger_memory_usage: ledgerMu,
      events: eventFigures,
      keys: { before: keys0, after_reservations: keys3 },
      rows,
      breakdown_after_reservations: afterReservations,
      breakdown_after_ledgers: afterLedgers,
    };
    mkdirSync(join(HERE, 'results'), { recursive: true });
    const file = join(HERE, 'results', `memory-${result.at.replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);

    const pad = (s, n) => String(s).padEnd(n);
    const lpad = (s, n) => String(s).padStart(n);
    const W = Math.max(72, ...rows.map((row) => row.item.length));
    let table = `\n${pad('item', W)} ${lpad('count', 8)} ${lpad('bytes each', 11)}\n${'-'.repeat(W + 21)}\n`;
    for (const row of rows) table += `${pad(row.item, W)} ${lpad(row.count, 8)} ${lpad(row.bytes_each, 11)}\n`;
    if (committedEach !== null) table += `${pad('committed reservation kept for the retention period (with + commit change)', W)} ${lpad('', 8)} ${lpad(committedEach, 11)}\n`;
    table += `\nMEMORY USAGE per active reservation (cross-check: SAMPLES 0 of each container, summed over ${TENANTS} tenants, / ${N};\n`;
    table += `excludes the keyspace entries of the ${TENANTS * 4} container keys and allocator fragmentation):\n`;
    for (const [k, v] of Object.entries(muPer)) {
      const c = Object.entries(containerInfo).find(([name]) => k.startsWith(`${name} `));
      table += `  ${pad(k, 24)} ${lpad(v, 6)}${c ? `  ${JSON.stringify(c[1].encodings)}` : ''}\n`;
    }
    const rec = (x) => `avg ${x.avg_bytes} B (min ${x.min_bytes}, max ${x.max_bytes}, ${x.samples} samples, ${x.entries} map entries); largest entries ${JSON.stringify(x.largest_entries)}`;
    table += `\nEncoded record (HSTRLEN of P:{t}:rs fields; entries as approx. MessagePack bytes of key + value):\n`;
    table += `  active:        ${rec(activeRecord)}\n`;
    if (metaSample) table += `  with metadata: ${rec(metaSample.with_metadata)}\n`;
    if (committedRecord) table += `  committed:     ${rec(committedRecord)}\n`;
    table += `\nKey types after the reservations (MEMORY USAGE, SAMPLES 0):\n`;
    table += `  ${pad('type', 28)} ${lpad('keys', 8)} ${lpad('total B', 12)} ${lpad('avg B', 8)}  encodings\n`;
    for (const [k, v] of Object.entries(afterReservations)) {
      table += `  ${pad(k, 28)} ${lpad(v.keys, 8)} ${lpad(v.bytes, 12)} ${lpad(v.avg_bytes, 8)}  ${JSON.stringify(v.encodings)}\n`;
    }
    if (eventFigures) {
      table += `\nKey types after the events (MEMORY USAGE, SAMPLES 0):\n`;
      for (const [k, v] of Object.entries(eventFigures.breakdown)) {
        if (!/event|dl|whd|wh|outbox|bullmq/.test(k)) continue;
        table += `  ${pad(k, 28)} ${lpad(v.keys, 8)} ${lpad(v.bytes, 12)} ${lpad(v.avg_bytes, 8)}  ${JSON.stringify(v.encodings)}\n`;
      }
    }
    table += `\nTarget <= 600 B per active reservation, including its idempotency record: ${withIdem} B (${withIdem <= 600 ? 'met' : 'NOT met'}; without the idempotency index entry ${withoutIdem} B)\n`;
    process.stdout.write(table);
    log(`written ${file}`);
  } finally {
    if (receiver.server) {
      receiver.server.closeAllConnections();
      await new Promise((ok) => receiver.server.close(() => ok()));
    }
    await system.close();
    await stopAll();
  }
}

main().catch(async (err) => {
  log(err.stack ?? String(err));
  await stopAll();
  process.exit(1);
});
