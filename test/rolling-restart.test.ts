import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { freePorts } from './global-setup.js';
import { ADMIN_KEY, createTenant, json, startHarness, type Harness, type TestTenant } from './helpers.js';

/**
 * Rolling restart under load: two real `cycles runtime` processes (through tsx) on one Redis; a
 * client round-robins reserve+commit over both and, on a connection error or a 503, retries the
 * same request (same idempotency key) on the other instance. Mid-load, instance A gets SIGTERM, exits
 * and a fresh A starts on the same port; then the same for B. No request may fail for the client,
 * and the ledger must show every acknowledged effect exactly once.
 */
const TSX = ['--import', 'tsx', 'src/cli.ts'];
const prefix = `cyroll${randomBytes(3).toString('hex')}`;
const UNIT = 'USD_MICROCENTS';
const ESTIMATE = 10;
const CONCURRENCY = 4;

let h: Harness;
let tenant: TestTenant;
let ports: [number, number];
const procs: ChildProcess[] = [];
/** The live process of instance A (0) and B (1). */
const current: ChildProcess[] = [];
const NAMES = ['A', 'B'] as const;
/** Instances the client sends no new requests to (retries may still reach them). */
const outOfRotation = new Set<number>();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function startRuntime(port: number): ChildProcess {
  const child = spawn(process.execPath, [...TSX, 'runtime'], {
    env: {
      ...process.env,
      REDIS_URL: inject('redisUrl'),
      ADMIN_API_KEY: ADMIN_KEY,
      CYCLES_KEY_PREFIX: prefix,
      CYCLES_HOST: '127.0.0.1',
      CYCLES_RUNTIME_PORT: String(port),
      CYCLES_WORKERS: '1',
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr?.on('data', (d) => process.stderr.write(d));
  procs.push(child);
  return child;
}

async function waitReady(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/actuator/health/readiness`)).ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`runtime on port ${port} not ready within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface Answer {
  status: number;
  body: any;
}

/** One keep-alive agent per instance, as a real client or load balancer would hold. */
const agents = new Map<number, http.Agent>();

function post(port: number, path: string, body: unknown, key: string): Promise<Answer> {
  let agent = agents.get(port);
  if (!agent) agents.set(port, (agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY })));
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        agent,
        timeout: 5000,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), 'x-cycles-api-key': key },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : undefined }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(Object.assign(new Error('request timed out'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end(payload);
  });
}

const RETRYABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT']);

const stats = {
  requests: 0,
  retries: 0,
  byCause: {} as Record<string, number>,
  servedBy: {} as Record<string, number>,
  failures: [] as string[],
};

/**
 * The client: the request goes to `first`; a connection error or a 503 sends the very same
 * request (same idempotency key) to the other instance, alternating, until an answer or 15 s.
 */
async function send(first: number, path: string, body: unknown, phase: () => string): Promise<Answer> {
  const deadline = Date.now() + 15_000;
  let i = outOfRotation.has(first % 2) ? first + 1 : first;
  for (let attempt = 0; ; attempt += 1) {
    const port = ports[i % 2]!;
    let cause: string;
    try {
      const answer = await post(port, path, body, tenant.key);
      stats.requests += 1;
      if (answer.status !== 503) {
        const served = `${NAMES[i % 2]}:${phase()}`;
        stats.servedBy[served] = (stats.servedBy[served] ?? 0) + 1;
        return answer;
      }
      cause = '503';
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      stats.requests += 1;
      cause = e.message === 'socket hang up' ? 'socket hang up' : (e.code ?? e.message);
      if (!RETRYABLE.has(e.code ?? '')) {
        stats.failures.push(`${path}: ${cause}`);
        throw err;
      }
    }
    stats.retries += 1;
    stats.byCause[cause] = (stats.byCause[cause] ?? 0) + 1;
    if (Date.now() > deadline) throw new Error(`${path}: no instance answered within 15 s (last: ${cause})`);
    if (attempt > 0) await new Promise((r) => setTimeout(r, 20));
    i += 1;
  }
}

beforeAll(async () => {
  ports = (await freePorts(2)) as [number, number];
  h = await startHarness({ keyPrefix: prefix });
  tenant = await createTenant(h, { budgets: [['', 1_000_000_000]] });
  current.push(startRuntime(ports[0]), startRuntime(ports[1]));
  await Promise.all(ports.map((p) => waitReady(p, 30_000)));
}, 40_000);

afterAll(async () => {
  for (const agent of agents.values()) agent.destroy();
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  await h?.close();
});

describe('rolling restart of one of two runtime instances under load', () => {
  it('loses no request and no ledger effect', { timeout: 60_000 }, async () => {
    let phase = 'before';
    let stop = false;
    let next = 0;
    const acknowledged = new Map<string, number>(); // reservation id -> committed amount

    const loop = async () => {
      while (!stop) {
        const n = (next += 1);
        const rr = n % 2;
        const reserve = await send(rr, '/v1/reservations', {
          idempotency_key: `roll-r-${n}`,
          subject: { tenant: tenant.id },
          action: { kind: 'llm.completion', name: 'm' },
          estimate: { unit: UNIT, amount: ESTIMATE },
        }, () => phase);
        if (reserve.status !== 200) {
          stats.failures.push(`reserve ${n}: ${reserve.status} ${JSON.stringify(reserve.body)}`);
          continue;
        }
        const rid = reserve.body.reservation_id as string;
        const actual = (n % ESTIMATE) + 1;
        // The commit goes to the other instance than the reserve did.
        const commit = await send(rr + 1, `/v1/reservations/${rid}/commit`, {
          idempotency_key: `roll-c-${n}`,
          actual: { unit: UNIT, amount: actual },
        }, () => phase);
        if (commit.status !== 200) {
          stats.failures.push(`commit ${n}: ${commit.status} ${JSON.stringify(commit.body)}`);
          continue;
        }
        if (commit.body.status !== 'COMMITTED' || commit.body.charged?.amount !== actual) {
          stats.failures.push(`commit ${n}: unexpected answer ${JSON.stringify(commit.body)}`);
        }
        if (acknowledged.has(rid)) stats.failures.push(`reservation ${rid} acknowledged twice`);
        acknowledged.set(rid, commit.body.charged?.amount);
      }
    };
    const load = Promise.all(Array.from({ length: CONCURRENCY }, loop));

    // A rolling upgrade: A, then B. A's clients are not told (requests keep arriving on A's
    // keep-alive connections while it drains: 503 or a reset, retried on B). B is taken out of the
    // rotation when it gets SIGTERM, as a load balancer does, while its pooled keep-alive
    // connections stay open: without `Connection: close` on the answers in flight, those idle
    // sockets would hold B's close for keepAliveTimeout, and close-with-grace would kill it (exit 1).
    await sleep(2000);
    const restarts = [];
    for (const [index, announce] of [[0, false], [1, true]] as const) {
      const name = NAMES[index];
      const old = current[index]!;
      const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
        old.once('exit', (code, signal) => resolve({ code, signal })));
      phase = `${name} draining`;
      if (announce) outOfRotation.add(index);
      const t0 = Date.now();
      old.kill('SIGTERM');
      const exit = await exited;
      const shutdownMs = Date.now() - t0;
      phase = `${name} down`;
      current[index] = startRuntime(ports[index]);
      await waitReady(ports[index], 30_000);
      outOfRotation.delete(index);
      const gapMs = Date.now() - t0;
      phase = `${name} restarted`;
      restarts.push({ name, exit, shutdownMs, gapMs });
      await sleep(2000);
    }
    stop = true;
    await load;

    // Shown in the test output: the figures docs/operations.md quotes.
    process.stdout.write(`rolling restart: ${JSON.stringify({ ...stats, reservations: acknowledged.size, restarts })}\n`);

    for (const r of restarts) {
      expect(r.exit, r.name).toEqual({ code: 0, signal: null });
      // A graceful stop: well inside close-with-grace's 10 s, not held open by keep-alive sockets.
      expect(r.shutdownMs, r.name).toBeLessThan(5000);
    }
    expect(stats.failures).toEqual([]);
    // Each instance served load before its restart, the other carried it meanwhile, and the
    // restarted one served again.
    for (const [name, other] of [['A', 'B'], ['B', 'A']]) {
      expect(stats.servedBy[`${name}:before`] ?? 0).toBeGreaterThan(0);
      expect(stats.servedBy[`${other}:${name} down`] ?? 0).toBeGreaterThan(0);
      expect(stats.servedBy[`${name}:${name} restarted`] ?? 0).toBeGreaterThan(0);
    }
    expect(acknowledged.size).toBeGreaterThan(100);

    // Ledger: the amounts the client saw charged, each counted once, nothing left reserved.
    const expectedSpent = [...acknowledged.values()].reduce((a, b) => a + b, 0);
    const balance = await tenant.balance();
    expect({ spent: balance.spent.amount, reserved: balance.reserved.amount }).toEqual({ spent: expectedSpent, reserved: 0 });
    expect(balance.remaining.amount).toBe(1_000_000_000 - expectedSpent);

    // Every reservation in the store is an acknowledged one, committed with the amount the client saw;
    // a retried reserve that had created a second reservation would show up here.
    const stored = new Map<string, any>();
    let cursor: string | undefined;
    do {
      const res = await tenant.get(`/v1/reservations?tenant=${tenant.id}&limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      expect(res.statusCode, res.body).toBe(200);
      const page = json(res);
      for (const r of page.reservations as any[]) stored.set(r.reservation_id, r);
      cursor = page.has_more ? page.next_cursor : undefined;
    } while (cursor);
    expect(stored.size).toBe(acknowledged.size);
    const wrong: string[] = [];
    for (const [rid, actual] of acknowledged) {
      const res = await tenant.get(`/v1/reservations/${rid}`);
      const r = json(res);
      if (res.statusCode !== 200 || r.status !== 'COMMITTED' || r.committed?.amount !== actual) wrong.push(`${rid}: ${res.statusCode} ${res.body}`);
    }
    expect(wrong).toEqual([]);
  });
});
