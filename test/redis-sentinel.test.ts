import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { freePorts } from './global-setup.js';
import { ADMIN_KEY, TestTenant, invariantHolds, json, startHarness, type Harness } from './helpers.js';
import { RedisProcs, direct, sleep, until } from './redis-procs.js';

/**
 * Failover under load through Redis Sentinel (ADR 0018). Each case starts its own master,
 * replicas and one sentinel, connects the system through the sentinel, runs a stream of reserves,
 * fails the master over in the middle of it, and measures how long the runtime answered errors
 * and whether every reservation that was acknowledged (200) is still there afterwards.
 *
 *   1. CYCLES_REDIS_WAIT_REPLICAS=1, two replicas, master SIGKILLed: every acknowledged write is
 *      on a replica, Sentinel promotes the most advanced one, so nothing acknowledged is lost.
 *   2. Default asynchronous replication, one replica, `SENTINEL FAILOVER` while the old master
 *      stays up: the split-brain window of a forced failover, measured (not asserted: what it loses
 *      is the point of the measurement, docs/operations.md "Redis topologies").
 *   3. The same forced failover with CYCLES_REDIS_WAIT_REPLICAS equal to the number of replicas
 *      (1): the old master cannot get a write acknowledged once its replica left, so nothing
 *      acknowledged is lost; writes fail until the old master rejoins as a replica (measured).
 *
 * The figures are printed (console.log) for the operations guide.
 */

const MASTER = 'cyclesmaster';
const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
/** Concurrent reserve loops of the stream. */
const LOOPS = 6;
/** The stream runs this long before the failover is triggered. */
const LEAD_IN_MS = 800;
/** After the failover, the stream stops once reserves succeeded for this long without an error. */
const SETTLED_MS = 1000;
/** Hard bound on a stream (a failover that never completes fails the test). */
const STREAM_BOUND_MS = 30_000;

const all: RedisProcs[] = [];

afterAll(async () => {
  await Promise.all(all.map((p) => p.stopAll()));
});

interface Topology {
  procs: RedisProcs;
  sentinelPort: number;
  sentinel: Redis;
  masterPort: () => Promise<number>;
}

/** Passwords of the data nodes and of the sentinel, when the topology requires them. */
interface Auth {
  data: string;
  sentinel: string;
}

async function topology(replicas: number, auth?: Auth): Promise<Topology> {
  const procs = new RedisProcs();
  all.push(procs);
  const [masterPort, sentinelPort, ...replicaPorts] = await freePorts(2 + replicas);
  const common = [
    '--appendonly', 'yes', '--maxmemory-policy', 'noeviction', '--repl-diskless-sync', 'yes', '--repl-diskless-sync-delay', '0',
    ...(auth ? ['--requirepass', auth.data, '--masterauth', auth.data] : []),
  ];
  await procs.server(masterPort!, common);
  await Promise.all(replicaPorts.map((p) => procs.server(p, [...common, '--replicaof', '127.0.0.1', String(masterPort)])));
  const master = direct(masterPort!, auth?.data);
  await until(async () => ((await master.info('replication')).match(/state=online/g)?.length ?? 0) === replicas, 10_000, 'replicas online');
  master.disconnect();
  await procs.sentinel(sentinelPort!, [
    `sentinel monitor ${MASTER} 127.0.0.1 ${masterPort} 1`,
    `sentinel down-after-milliseconds ${MASTER} 1000`,
    `sentinel failover-timeout ${MASTER} 5000`,
    `sentinel parallel-syncs ${MASTER} ${replicas}`,
    ...(auth ? [`sentinel auth-pass ${MASTER} ${auth.data}`, `requirepass ${auth.sentinel}`] : []),
  ]);
  const sentinel = direct(sentinelPort!, auth?.sentinel);
  await until(async () => {
    const rows = (await sentinel.call('SENTINEL', 'REPLICAS', MASTER)) as string[][];
    return rows.length === replicas && rows.every((r) => r[r.indexOf('flags') + 1] === 'slave');
  }, 15_000, 'sentinel sees every replica');
  return {
    procs,
    sentinelPort: sentinelPort!,
    sentinel,
    masterPort: async () => Number(((await sentinel.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER)) as string[])[1]),
  };
}

async function provision(h: Harness): Promise<TestTenant> {
  const id = `sn-${randomBytes(4).toString('hex')}`;
  const t = await h.admin.inject({ method: 'POST', url: '/v1/admin/tenants', headers: ADMIN, payload: { tenant_id: id, name: id } });
  expect(t.statusCode, t.body).toBe(201);
  const k = await h.admin.inject({
    method: 'POST', url: '/v1/admin/api-keys', headers: ADMIN,
    payload: { tenant_id: id, name: 'sentinel', permissions: ['reservations:create', 'reservations:list', 'balances:read'] },
  });
  expect(k.statusCode, k.body).toBe(201);
  const tenant = new TestTenant(h, id, json(k).key_secret);
  await tenant.budget('', 100_000_000);
  return tenant;
}

interface StreamResult {
  acked: string[];
  failed: number;
  /** Longest time after the trigger with no successful reserve: what a client saw as the outage. */
  outageMs: number;
  /** Time from the trigger to the first success that ended that outage. */
  recoveredAfterMs: number;
}

/** Reserves in LOOPS loops; `failover` runs after LEAD_IN_MS; stops once settled again. */
async function stream(t: TestTenant, failover: () => Promise<void>, newMaster: () => Promise<boolean>): Promise<StreamResult> {
  const acked: string[] = [];
  const successes: number[] = [];
  const failures: number[] = [];
  let stop = false;
  const loops = Array.from({ length: LOOPS }, async () => {
    while (!stop) {
      const res = await t.reserve(1, { ttl_ms: 600_000 });
      if (res.statusCode === 200) {
        acked.push(json(res).reservation_id);
        successes.push(Date.now());
      } else {
        failures.push(Date.now());
        await sleep(20);
      }
    }
  });
  await sleep(LEAD_IN_MS);
  const triggeredAt = Date.now();
  await failover();
  const deadline = triggeredAt + STREAM_BOUND_MS;
  let switched = false;
  while (Date.now() < deadline) {
    await sleep(100);
    switched ||= await newMaster();
    const lastFailure = failures[failures.length - 1] ?? 0;
    const lastSuccess = successes[successes.length - 1] ?? 0;
    if (switched && lastSuccess - Math.max(lastFailure, triggeredAt) > SETTLED_MS) break;
  }
  stop = true;
  await Promise.all(loops);
  expect(switched, 'sentinel promoted a replica').toBe(true);
  // The longest gap between consecutive successes that overlaps the time after the trigger.
  const times = successes.slice().sort((a, b) => a - b);
  let outageMs = 0;
  let recoveredAfterMs = 0;
  let previous = times.filter((x) => x <= triggeredAt).pop() ?? triggeredAt;
  for (const at of times.filter((x) => x > triggeredAt)) {
    if (at - previous > outageMs) {
      outageMs = at - previous;
      recoveredAfterMs = at - triggeredAt;
    }
    previous = at;
  }
  return { acked, failed: failures.length, outageMs, recoveredAfterMs };
}

function report(scenario: string, r: StreamResult, missingCount: number): void {
  console.log(`[sentinel: ${scenario}] acknowledged ${r.acked.length}, failed ${r.failed}, longest time without a successful reserve ` +
    `${r.outageMs} ms (ended ${r.recoveredAfterMs} ms after the trigger), acknowledged but missing afterwards: ${missingCount}`);
}

/** Acknowledged reservations that the (new) master no longer has. */
async function missing(t: TestTenant, ids: string[]): Promise<string[]> {
  const gone: string[] = [];
  for (let i = 0; i < ids.length; i += 200) {
    const page = ids.slice(i, i + 200);
    const codes = await Promise.all(page.map(async (id) => (await t.get(`/v1/reservations/${id}`)).statusCode));
    codes.forEach((code, j) => {
      if (code !== 200) gone.push(page[j]!);
    });
  }
  return gone;
}

describe('Redis Sentinel: failover during a stream of reserves', () => {
  it('with CYCLES_REDIS_WAIT_REPLICAS=1, a killed master loses no acknowledged reservation and reserves succeed again within seconds', { timeout: 45_000 }, async () => {
    const topo = await topology(2);
    const before = await topo.masterPort();
    const h = await startHarness({
      redis: { mode: 'sentinel', sentinels: [{ host: '127.0.0.1', port: topo.sentinelPort }], masterName: MASTER },
      keyPrefix: `cysn${randomBytes(2).toString('hex')}`,
      events: { redisWaitReplicas: 1, redisWaitTimeoutMs: 500 },
    });
    try {
      const t = await provision(h);
      const r = await stream(t, () => topo.procs.kill(before), async () => (await topo.masterPort()) !== before);
      const gone = await missing(t, r.acked);
      const bal = json(await t.get(`/v1/balances?tenant=${t.id}`)).balances[0];
      report('WAIT 1, two replicas, master SIGKILLed', r, gone.length);
      expect(gone).toEqual([]);
      expect(r.acked.length).toBeGreaterThan(0);
      // A reserve that failed only because WAIT timed out may still have been applied: the ledger
      // holds at least every acknowledged hold, and its invariant holds.
      expect(invariantHolds(bal)).toBe(true);
      expect(bal.reserved.amount).toBeGreaterThanOrEqual(r.acked.length);
      expect(r.recoveredAfterMs).toBeLessThan(15_000);
      const health = await h.runtime.inject({ method: 'GET', url: '/actuator/health' });
      expect(health.statusCode).toBe(200);
    } finally {
      await h.close();
    }
  });

  it('with asynchronous replication, a forced failover: measures the error window and what the split brain loses', { timeout: 45_000 }, async () => {
    const topo = await topology(1);
    const before = await topo.masterPort();
    const h = await startHarness({
      redis: { mode: 'sentinel', sentinels: [{ host: '127.0.0.1', port: topo.sentinelPort }], masterName: MASTER },
      keyPrefix: `cysn${randomBytes(2).toString('hex')}`,
    });
    try {
      const t = await provision(h);
      const r = await stream(
        t,
        async () => {
          await until(async () => (await topo.sentinel.call('SENTINEL', 'FAILOVER', MASTER)) === 'OK', 10_000, 'SENTINEL FAILOVER accepted');
        },
        async () => (await topo.masterPort()) !== before,
      );
      const gone = await missing(t, r.acked);
      report('asynchronous replication, one replica, SENTINEL FAILOVER', r, gone.length);
      expect(r.acked.length).toBeGreaterThan(0);
      expect(r.recoveredAfterMs).toBeLessThan(15_000);
      const bal = json(await t.get(`/v1/balances?tenant=${t.id}`)).balances[0];
      expect(invariantHolds(bal)).toBe(true);
    } finally {
      await h.close();
    }
  });

  // A measurement more than a check: writes stop until the demoted master is back as a replica
  // (about 11 s here, sometimes far longer under load), so it runs on its own, outside npm test:
  // `npm run test:long` (CYCLES_SLOW_FAILOVER_TESTS=1), which .ci/run runs after npm test.
  it.skipIf(!process.env.CYCLES_SLOW_FAILOVER_TESTS)('with CYCLES_REDIS_WAIT_REPLICAS equal to the replicas, a forced failover loses no acknowledged reservation', { timeout: 120_000 }, async () => {
    const topo = await topology(1);
    const before = await topo.masterPort();
    const h = await startHarness({
      redis: { mode: 'sentinel', sentinels: [{ host: '127.0.0.1', port: topo.sentinelPort }], masterName: MASTER },
      keyPrefix: `cysn${randomBytes(2).toString('hex')}`,
      events: { redisWaitReplicas: 1, redisWaitTimeoutMs: 500 },
    });
    try {
      const t = await provision(h);
      const r = await stream(
        t,
        async () => {
          await until(async () => (await topo.sentinel.call('SENTINEL', 'FAILOVER', MASTER)) === 'OK', 10_000, 'SENTINEL FAILOVER accepted');
        },
        async () => (await topo.masterPort()) !== before,
      );
      const gone = await missing(t, r.acked);
      report('WAIT 1, one replica, SENTINEL FAILOVER', r, gone.length);
      expect(gone).toEqual([]);
      expect(r.acked.length).toBeGreaterThan(0);
      const bal = json(await t.get(`/v1/balances?tenant=${t.id}`)).balances[0];
      expect(invariantHolds(bal)).toBe(true);
      expect(bal.reserved.amount).toBeGreaterThanOrEqual(r.acked.length);
    } finally {
      await h.close();
    }
  });

  it('connects the real process through a password-protected sentinel to a password-protected master, from the environment', { timeout: 45_000 }, async () => {
    const auth = { data: `data-${randomBytes(6).toString('hex')}`, sentinel: `sent-${randomBytes(6).toString('hex')}` };
    const topo = await topology(1, auth);
    const [runtimePort] = await freePorts(1);
    let out = '';
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'runtime'], {
      env: {
        ...process.env,
        REDIS_URL: '',
        REDIS_SENTINELS: `127.0.0.1:${topo.sentinelPort}`,
        REDIS_SENTINEL_MASTER: MASTER,
        REDIS_SENTINEL_PASSWORD: auth.sentinel,
        REDIS_PASSWORD: auth.data,
        ADMIN_API_KEY: 'sentinel-process-admin',
        CYCLES_KEY_PREFIX: `cysnp${randomBytes(2).toString('hex')}`,
        CYCLES_HOST: '127.0.0.1',
        CYCLES_RUNTIME_PORT: String(runtimePort),
        CYCLES_WORKERS: '1',
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await until(async () => (await fetch(`http://127.0.0.1:${runtimePort}/actuator/health/readiness`)).ok, 40_000, 'readiness through the sentinel');
      expect(out).toContain('"mode":"sentinel"');
      expect(out).not.toContain(auth.data);
      expect(out).not.toContain(auth.sentinel);
    } finally {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      await exited;
    }
  });
});
