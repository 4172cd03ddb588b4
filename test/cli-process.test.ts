import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { freePorts } from './global-setup.js';

/**
 * The real process: `cycles all` started from the CLI (through tsx, so no build is needed),
 * with two cluster workers, driven over HTTP; and the admin CLI commands against the same Redis.
 */
const run = promisify(execFile);
const TSX = ['--import', 'tsx', 'src/cli.ts'];
const ADMIN = 'cli-test-admin-key';
const prefix = `cyproc${randomBytes(3).toString('hex')}`;

let server: ChildProcess;
let ports: { runtime: number; admin: number; events: number };
let env: NodeJS.ProcessEnv;

async function waitFor<T>(fn: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch {
      // not ready yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (server exit code ${server?.exitCode}, children ${server?.pid ? (await childPids(server.pid)).join(',') : 'none'})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function childPids(pid: number): Promise<number[]> {
  try {
    // Only the cluster workers: tsx may also run an esbuild service as a child of the primary.
    const { stdout } = await run('pgrep', ['-P', String(pid), '-f', 'cli.ts']);
    return stdout.split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

const api = (port: number, path: string, init: RequestInit = {}) => fetch(`http://127.0.0.1:${port}${path}`, init);
const adminHeaders = { 'x-admin-api-key': ADMIN, 'content-type': 'application/json' };

beforeAll(async () => {
  const [runtime, admin, events] = await freePorts(3);
  ports = { runtime: runtime!, admin: admin!, events: events! };
  env = {
    ...process.env,
    REDIS_URL: inject('redisUrl'),
    ADMIN_API_KEY: ADMIN,
    CYCLES_KEY_PREFIX: prefix,
    CYCLES_HOST: '127.0.0.1',
    CYCLES_RUNTIME_PORT: String(ports.runtime),
    CYCLES_ADMIN_PORT: String(ports.admin),
    CYCLES_EVENTS_PORT: String(ports.events),
    CYCLES_WORKERS: '2',
    LOG_LEVEL: 'warn',
  };
  server = spawn(process.execPath, [...TSX, 'all'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  server.stderr?.on('data', (d) => process.stderr.write(d));
  // Generous bounds: each worker transpiles the sources through tsx, which is slow on a loaded
  // machine (CI runs the other test files at the same time).
  await waitFor(async () => ((await childPids(server.pid!)).length === 2 ? true : undefined), 40_000, 'two workers');
  await waitFor(async () => ((await api(ports.runtime, '/actuator/health/readiness')).ok ? true : undefined), 40_000, 'readiness');
}, 90_000);

afterAll(async () => {
  if (server.exitCode === null) server.kill('SIGKILL');
});

describe('cycles all with CYCLES_WORKERS=2', () => {
  it('provisions with the CLI, serves reserve/commit, and aggregates metrics across workers', { timeout: 90_000 }, async () => {
    const tenant = `proc-${randomBytes(3).toString('hex')}`;
    const cli = (...args: string[]) => run(process.execPath, [...TSX, ...args], { env });
    const created = JSON.parse((await cli('tenant', 'create', tenant, '--name', 'Proc')).stdout);
    expect(created).toMatchObject({ tenant_id: tenant, status: 'ACTIVE' });
    const key = JSON.parse((await cli('key', 'create', tenant)).stdout);
    expect(key.key_secret).toMatch(/^cyc_live_/);
    await cli('budget', 'create', tenant, `tenant:${tenant}`, 'USD_MICROCENTS', '1000');
    const funded = JSON.parse((await cli('budget', 'fund', tenant, `tenant:${tenant}`, 'USD_MICROCENTS', 'CREDIT', '500')).stdout);
    expect(funded.new_allocated).toEqual({ unit: 'USD_MICROCENTS', amount: 1500 });

    // Invalid CLI input is refused with the schema's message and exit code 2, nothing written.
    await expect(cli('tenant', 'create', 'Bad_Id')).rejects.toMatchObject({ code: 2 });
    expect((await api(ports.admin, '/v1/admin/tenants/Bad_Id', { headers: adminHeaders })).status).toBe(404);

    const headers = { 'x-cycles-api-key': key.key_secret, 'content-type': 'application/json' };
    const N = 12;
    for (let i = 0; i < N; i += 1) {
      const res = await api(ports.runtime, '/v1/reservations', {
        method: 'POST',
        headers,
        body: JSON.stringify({
          idempotency_key: `p-${i}`,
          subject: { tenant },
          action: { kind: 'llm.completion', name: 'm' },
          estimate: { unit: 'USD_MICROCENTS', amount: 10 },
        }),
      });
      expect(res.status).toBe(200);
      const { reservation_id } = (await res.json()) as { reservation_id: string };
      const c = await api(ports.runtime, `/v1/reservations/${reservation_id}/commit`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ idempotency_key: `c-${i}`, actual: { unit: 'USD_MICROCENTS', amount: 10 } }),
      });
      expect(c.status).toBe(200);
    }
    const bal = (await (await api(ports.runtime, `/v1/balances?tenant=${tenant}`, { headers })).json()) as { balances: any[] };
    expect(bal.balances[0]).toMatchObject({ spent: { amount: N * 10 }, reserved: { amount: 0 }, remaining: { amount: 1500 - N * 10 } });

    const text = await (await api(ports.runtime, '/actuator/prometheus', { headers: adminHeaders })).text();
    const line = text.split('\n').find((l) => l.startsWith('cycles_http_requests_total{') && l.includes('operation="createReservation"') && l.includes('status="200"'));
    // Summed over both workers: every reserve of this test is counted once.
    expect(Number(line?.split(' ').pop())).toBe(N);
  });

  it('replaces a worker that dies, keeps serving, and stops cleanly on SIGTERM', async () => {
    const before = await childPids(server.pid!);
    process.kill(before[0]!, 'SIGKILL');
    const after = await waitFor(async () => {
      const pids = await childPids(server.pid!);
      return pids.length === 2 && !pids.includes(before[0]!) ? pids : undefined;
    }, 30_000, 'a replacement worker');
    expect(after).toHaveLength(2);
    await waitFor(async () => ((await api(ports.runtime, '/actuator/health')).status === 200 ? true : undefined), 30_000, 'health UP');

    const exited = new Promise<number | null>((resolve) => server.once('exit', (code) => resolve(code)));
    server.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(await childPids(server.pid!)).toEqual([]);
  }, 90_000);
});
