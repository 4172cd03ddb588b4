// The Redis-bound limit: the reserve Lua script called straight from Node over ioredis, with the
// same client settings (the server's createRedis), the same store code (RuntimeStore.reserve) and the same
// call shape the server builds for POST /v1/reservations - no HTTP, no Fastify, no auth, no
// validation. N concurrent loops issue back-to-back reserves for the duration.
import { Redis } from 'ioredis';
import { Effects, Latencies, readLedger, checkLedger, UNIT } from './workload.mjs';
import { cpuSample, cpuPercent } from './cpu.mjs';

const DAY_MS = 86_400_000;
const DEFAULT_GRACE_MS = 5000;

export async function loadDist(repoRoot) {
  const dist = (p) => import(new URL(`file://${repoRoot}/dist/${p}`).href);
  const [redisMod, scripts, keys, store, canonical, ids, scopes, codec] = await Promise.all([
    dist('store/redis.js'),
    dist('store/scripts.js'),
    dist('store/keys.js'),
    dist('store/runtime-store.js'),
    dist('domain/canonical.js'),
    dist('domain/ids.js'),
    dist('domain/scopes.js'),
    dist('store/reservation-codec.js'),
  ]);
  return {
    createRedis: redisMod.createRedis,
    registerScripts: scripts.registerScripts,
    Keys: keys.Keys,
    RuntimeStore: store.RuntimeStore,
    payloadHash: canonical.payloadHash,
    newReservationShortId: ids.newReservationShortId,
    subjectIsDerivable: codec.subjectIsDerivable,
    newEventIdBase: ids.newEventIdBase,
    newRequestId: ids.newRequestId,
    newTraceId: ids.newTraceId,
    deriveScopes: scopes.deriveScopes,
  };
}

/** The ReserveCall RuntimeService.evaluate builds for a live POST /v1/reservations. */
function reserveCall(lib, workload, keyId) {
  const { n, key } = workload.nextKey('direct');
  const agent = n % workload.agents;
  const body = {
    idempotency_key: key,
    subject: { tenant: workload.tenant, agent: workload.agentName(agent) },
    action: { kind: 'llm.completion', name: 'bench-model' },
    estimate: { unit: UNIT, amount: workload.estimate },
    ttl_ms: workload.ttlMs,
  };
  const { scopes, scopePath } = lib.deriveScopes(body.subject, workload.tenant);
  return {
    agent,
    call: {
      tenantId: workload.tenant,
      endpoint: 'reserve',
      mode: 'live',
      shortId: lib.newReservationShortId(),
      payloadHash: lib.payloadHash({ ...body, dry_run: false }),
      idempotencyKey: body.idempotency_key,
      estimate: body.estimate.amount,
      unit: body.estimate.unit,
      ttlMs: body.ttl_ms,
      graceMs: DEFAULT_GRACE_MS,
      overagePolicy: undefined,
      subjectJson: JSON.stringify(body.subject),
      storeSubject: !lib.subjectIsDerivable(body.subject, scopePath),
      actionJson: JSON.stringify(body.action),
      metadataJson: undefined,
      scopes,
      scopePath,
      minIdempotencyTtlMs: DAY_MS,
      eventIdBase: lib.newEventIdBase(),
      requestId: lib.newRequestId(),
      traceId: lib.newTraceId(),
      actorJson: JSON.stringify({ type: 'api_key', key_id: keyId }),
    },
  };
}

/**
 * Opens the direct client with the server's own factory (src/store/redis.ts: one connection,
 * auto-pipelining and the other options exactly as the server sets them), so the bound follows
 * the server's client configuration. BENCH_DIRECT_AUTOPIPELINING=0|1 overrides auto-pipelining
 * for experiments.
 */
export function openDirect(lib, redisUrl) {
  const override = process.env.BENCH_DIRECT_AUTOPIPELINING;
  const redis = override === undefined || override === ''
    ? lib.createRedis(redisUrl, 'cycles-bench-direct')
    : new Redis(redisUrl, { enableAutoPipelining: override === '1' || override === 'true', maxRetriesPerRequest: 1, connectionName: 'cycles-bench-direct' });
  // The same durability option as the server (CYCLES_REDIS_WAIT_REPLICAS passes through to it).
  const scripts = lib.registerScripts(redis, undefined, {
    waitReplicas: Number(process.env.CYCLES_REDIS_WAIT_REPLICAS ?? 0),
    waitTimeoutMs: Number(process.env.CYCLES_REDIS_WAIT_TIMEOUT_MS ?? 1000),
  });
  const store = new lib.RuntimeStore(redis, scripts, new lib.Keys('cycles'), 30 * DAY_MS);
  return { redis, store };
}

export async function runRedisBound(ctx, direct, connections, durationS) {
  const { workload, server, lib } = ctx;
  const before = await readLedger(server.runtimePort, workload);
  const effects = new Effects(workload.agents);
  const latencies = new Latencies();
  const outcomes = {};
  let ok = 0;
  let errors = 0;
  const cpuBefore = await cpuSample(ctx);
  const started = performance.now();
  const end = started + durationS * 1000;
  const loop = async () => {
    while (performance.now() < end) {
      const { agent, call } = reserveCall(lib, workload, ctx.keyId);
      const t0 = performance.now();
      try {
        const o = await direct.store.reserve(call);
        const ms = performance.now() - t0;
        outcomes[o.kind] = (outcomes[o.kind] ?? 0) + 1;
        if (o.kind === 'OK') {
          ok += 1;
          latencies.push(ms);
          effects.add({ kind: 'reserve', agent });
        } else {
          errors += 1;
        }
      } catch {
        errors += 1;
        outcomes.exception = (outcomes.exception ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: connections }, loop));
  const seconds = (performance.now() - started) / 1000;
  const cpu = cpuPercent(cpuBefore, await cpuSample(ctx));
  const after = await readLedger(server.runtimePort, workload);
  const ledger = checkLedger(before, after, effects, workload);
  const lat = latencies.summary();
  return {
    connections,
    duration_s: seconds,
    calls: ok + errors,
    throughput_ops: (ok + errors) / seconds,
    latency_ms: { p50: lat.p50, p90: lat.p90, p99: lat.p99, max: lat.max, mean: lat.mean, samples: lat.count },
    errors,
    outcomes,
    cpu,
    ledger,
  };
}
