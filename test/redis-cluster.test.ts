import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePorts } from './global-setup.js';
import { ADMIN_KEY, TestTenant, USD, idem, invariantHolds, json, nums, startHarness, type Harness } from './helpers.js';
import { RedisProcs, direct, execFileAsync, until } from './redis-procs.js';

/**
 * The whole system on a real 3-master Redis Cluster (redis-server --cluster-enabled, joined with
 * `redis-cli --cluster create`), connected through the Cluster spec: tenants spread over all three
 * masters go through reserve, commit, release, extend, direct debit, funding, the expiry sweep,
 * events relayed and delivered to an HTTP receiver through BullMQ, and the audit and event
 * listings. Any command touching keys of two slots would fail here with CROSSSLOT (or, inside an
 * auto-pipeline, with ioredis's "same slots allocation group" error).
 */

const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const prefix = `cycl${randomBytes(2).toString('hex')}`;
const procs = new RedisProcs();
let ports: number[] = [];
let nodes: Redis[] = [];
let h: Harness;
/** Receiver of webhook POSTs. */
const received: any[] = [];
let receiver: http.Server;
let receiverUrl = '';

/** tenant id → port of the master that owns its slot. */
const owner = new Map<string, number>();
const tenants: TestTenant[] = [];

/** Port of the master that owns `slot`, from CLUSTER SLOTS. */
async function masterOfSlot(slot: number): Promise<number> {
  const ranges = (await nodes[0]!.call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number, string]]>;
  const range = ranges.find(([from, to]) => slot >= from && slot <= to);
  if (!range) throw new Error(`slot ${slot} is not served`);
  return Number(range[2][1]);
}

async function provision(id: string): Promise<TestTenant> {
  const t = await h.admin.inject({ method: 'POST', url: '/v1/admin/tenants', headers: ADMIN, payload: { tenant_id: id, name: id } });
  expect(t.statusCode, t.body).toBe(201);
  const k = await h.admin.inject({
    method: 'POST', url: '/v1/admin/api-keys', headers: ADMIN,
    payload: {
      tenant_id: id, name: 'cluster',
      permissions: ['reservations:create', 'reservations:commit', 'reservations:release', 'reservations:extend', 'reservations:list', 'balances:read'],
    },
  });
  expect(k.statusCode, k.body).toBe(201);
  const tenant = new TestTenant(h, id, json(k).key_secret);
  await tenant.budget('', 1_000_000);
  await tenant.budget('workspace:prod', 100_000);
  return tenant;
}

beforeAll(async () => {
  ports = await freePorts(3);
  await Promise.all(ports.map((port) => procs.server(port, [
    '--cluster-enabled', 'yes', '--cluster-config-file', `${procs.dir}/nodes-${port}.conf`, '--cluster-node-timeout', '3000',
    '--appendonly', 'yes', '--maxmemory-policy', 'noeviction',
  ])));
  await execFileAsync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes']);
  nodes = ports.map((p) => direct(p));
  await until(async () => {
    const infos = await Promise.all(nodes.map((n) => n.call('CLUSTER', 'INFO') as Promise<string>));
    return infos.every((i) => i.includes('cluster_state:ok') && i.includes('cluster_known_nodes:3'));
  }, 20_000, 'cluster_state:ok on all three nodes');

  h = await startHarness({
    redis: { mode: 'cluster', nodes: ports.map((port) => ({ host: '127.0.0.1', port })) },
    keyPrefix: prefix,
    expiryIntervalMs: 300,
    events: { reconcileIntervalMs: 1000, jobLockMs: 2000 },
  });
  await h.system.startEventsService();
  const sec = await h.admin.inject({
    method: 'PUT', url: '/v1/admin/config/webhook-security', headers: ADMIN,
    payload: { allow_http: true, blocked_cidr_ranges: [], allowed_url_patterns: [] },
  });
  expect(sec.statusCode, sec.body).toBe(200);
  receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      res.statusCode = 204;
      res.end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
}, 60_000);

/** Bound on closing the system after a master was killed (BullMQ may wait on the lost node). */
const CLOSE_BOUND_MS = 5000;

afterAll(async () => {
  await Promise.race([h?.close(), new Promise((r) => setTimeout(r, CLOSE_BOUND_MS))]);
  receiver?.closeAllConnections();
  await new Promise<void>((resolve) => (receiver ? receiver.close(() => resolve()) : resolve()));
  for (const n of nodes) n.disconnect();
  await procs.stopAll();
});

describe('Redis Cluster: three masters', () => {
  it('places tenants on every master, each tenant wholly in its own slot', async () => {
    // Draw tenant ids until every master owns two of them.
    const perMaster = new Map<number, string[]>(ports.map((p) => [p, []]));
    for (let i = 0; i < 200 && [...perMaster.values()].some((ids) => ids.length < 2); i++) {
      const id = `cl-${randomBytes(4).toString('hex')}`;
      const slot = Number(await nodes[0]!.call('CLUSTER', 'KEYSLOT', `${prefix}:{${id}}:tenant`));
      const port = await masterOfSlot(slot);
      if (perMaster.get(port)!.length < 2) {
        perMaster.get(port)!.push(id);
        owner.set(id, port);
      }
    }
    expect([...perMaster.values()].map((ids) => ids.length)).toEqual([2, 2, 2]);
    tenants.push(...(await Promise.all([...owner.keys()].map(provision))));
    for (const t of tenants) {
      const home = direct(owner.get(t.id)!);
      try {
        // The tenant record and its budgets are physically on the master that owns the slot.
        expect(await home.exists(`${prefix}:{${t.id}}:tenant`)).toBe(1);
        expect(await home.exists(`${prefix}:{${t.id}}:b:tenant:${t.id}:${USD}`)).toBe(1);
      } finally {
        home.disconnect();
      }
    }
  });

  it('reserve, commit, release, extend, direct debit and funding on every master, with the ledger invariant', async () => {
    expect(tenants).toHaveLength(6);
    await Promise.all(tenants.map(async (t) => {
      const committed = await t.reserveOk(1000);
      const c = await t.commit(committed, 700);
      expect(c.statusCode, c.body).toBe(200);
      const released = await t.reserveOk(2000);
      const r = await t.release(released);
      expect(r.statusCode, r.body).toBe(200);
      const held = await t.reserveOk(300, { ttl_ms: 60_000 });
      const x = await t.post(`/v1/reservations/${held}/extend`, { idempotency_key: idem('x'), extend_by_ms: 1000 });
      expect(x.statusCode, x.body).toBe(200);
      const ev = await t.post('/v1/events', t.eventBody(50));
      expect(ev.statusCode, ev.body).toBe(201);
      const funded = await h.admin.inject({
        method: 'POST', url: `/v1/admin/budgets/fund?scope=${encodeURIComponent(t.scope('workspace:prod'))}&unit=${USD}&tenant_id=${t.id}`,
        headers: ADMIN, payload: { operation: 'CREDIT', amount: { unit: USD, amount: 5000 } },
      });
      expect(funded.statusCode, funded.body).toBe(200);
      const b = nums(await t.balance('workspace:prod'));
      expect(b).toMatchObject({ allocated: 105_000, spent: 750, reserved: 300, debt: 0 });
      for (const bal of json(await t.get(`/v1/balances?tenant=${t.id}`)).balances) expect(invariantHolds(bal)).toBe(true);
      // The listing reads the tenant's index and records, all in its slot.
      const list = json(await t.get(`/v1/reservations?tenant=${t.id}&limit=50`));
      expect(list.reservations.length).toBe(3);
    }));
  });

  it('expires abandoned reservations on every master through the BullMQ sweep', async () => {
    const due = await Promise.all(tenants.map((t) => t.reserveOk(400, { ttl_ms: 1000, grace_period_ms: 0 })));
    await until(async () => {
      // An expired reservation answers 410 RESERVATION_EXPIRED.
      const states = await Promise.all(tenants.map(async (t, i) => json(await t.get(`/v1/reservations/${due[i]}`)).error));
      return states.every((s) => s === 'RESERVATION_EXPIRED');
    }, 15_000, 'every due reservation EXPIRED');
    for (const t of tenants) expect(nums(await t.balance('workspace:prod')).reserved).toBe(300);
  });

  it('relays events from every master and delivers them through BullMQ to an HTTP receiver', async () => {
    const subs = await Promise.all(tenants.map(async (t) => {
      const res = await h.admin.inject({
        method: 'POST', url: `/v1/admin/webhooks?tenant_id=${t.id}`, headers: ADMIN,
        payload: { url: receiverUrl, event_types: ['reservation.denied', 'budget.funded'], signing_secret: `whsec_${randomBytes(12).toString('hex')}` },
      });
      expect(res.statusCode, res.body).toBe(201);
      return json(res).subscription.subscription_id as string;
    }));
    await Promise.all(tenants.map(async (t) => {
      const deny = await t.post('/v1/reservations', t.reserveBody(10_000_000_000, { dry_run: true }));
      expect(json(deny).decision).toBe('DENY');
      await t.fund('', 'CREDIT', 10);
    }));
    await until(async () => tenants.every((t) =>
      received.some((e) => e.tenant_id === t.id && e.event_type === 'reservation.denied') &&
      received.some((e) => e.tenant_id === t.id && e.event_type === 'budget.funded')), 20_000, 'both events of every tenant at the receiver');
    for (const sub of subs) {
      await until(async () => {
        const res = await h.admin.inject({ method: 'GET', url: `/v1/admin/webhooks/${sub}/deliveries?limit=10`, headers: ADMIN });
        const rows = json(res).deliveries as any[];
        return rows.length === 2 && rows.every((d) => d.status === 'SUCCESS');
      }, 10_000, `SUCCESS deliveries of ${sub}`);
    }
  });

  it('lists events and audit rows across masters', async () => {
    for (const t of tenants) {
      const events = json(await h.admin.inject({ method: 'GET', url: `/v1/admin/events?tenant_id=${t.id}&limit=100`, headers: ADMIN })).events as any[];
      const types = new Set(events.map((e) => e.event_type));
      for (const type of ['tenant.created', 'budget.created', 'budget.funded', 'reservation.denied', 'reservation.expired']) expect(types, type).toContain(type);
      const logs = json(await h.admin.inject({ method: 'GET', url: `/v1/admin/audit/logs?tenant_id=${t.id}&limit=100`, headers: ADMIN })).logs as any[];
      expect(logs.length).toBeGreaterThanOrEqual(3);
    }
    // The cross-tenant event index holds every tenant's events, read one GET per event.
    const all = json(await h.admin.inject({ method: 'GET', url: '/v1/admin/events?limit=100', headers: ADMIN })).events as any[];
    for (const t of tenants) expect(all.some((e) => e.tenant_id === t.id)).toBe(true);
  });

  it('runs the real process (`cycles all`) on the cluster from REDIS_CLUSTER_NODES', { timeout: 45_000 }, async () => {
    const [runtimePort, adminPort, eventsPort] = await freePorts(3);
    let out = '';
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'all'], {
      env: {
        ...process.env,
        REDIS_URL: '',
        REDIS_CLUSTER_NODES: ports.map((p) => `127.0.0.1:${p}`).join(','),
        ADMIN_API_KEY: ADMIN_KEY,
        CYCLES_KEY_PREFIX: prefix,
        CYCLES_HOST: '127.0.0.1',
        CYCLES_RUNTIME_PORT: String(runtimePort),
        CYCLES_ADMIN_PORT: String(adminPort),
        CYCLES_EVENTS_PORT: String(eventsPort),
        CYCLES_WORKERS: '1',
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await until(async () => (await fetch(`http://127.0.0.1:${eventsPort}/actuator/health`)).ok, 40_000, 'events service healthy');
      expect(out).toContain('"mode":"cluster"');
      // The startup guard read the settings of all three masters: nothing to warn about.
      expect(out).not.toMatch(/could not check|appendonly is off|maxmemory-policy is/);
      // The same tenants, served by the process: one reserve per master.
      for (const t of tenants.filter((x, i) => tenants.findIndex((y) => owner.get(y.id) === owner.get(x.id)) === i)) {
        const res = await fetch(`http://127.0.0.1:${runtimePort}/v1/reservations`, {
          method: 'POST', headers: { 'content-type': 'application/json', 'x-cycles-api-key': t.key }, body: JSON.stringify(t.reserveBody(5)),
        });
        expect(res.status, await res.clone().text()).toBe(200);
      }
    } finally {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      await exited;
    }
  });

  it('reports health UP with every master answering, and DOWN when one is gone', async () => {
    const up = await h.runtime.inject({ method: 'GET', url: '/actuator/health' });
    expect(up.statusCode, up.body).toBe(200);
    const ports3 = ports[2]!;
    await procs.kill(ports3);
    await until(async () => (await h.runtime.inject({ method: 'GET', url: '/actuator/health' })).statusCode === 503, 10_000, 'health DOWN');
  });
});
