import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { freePorts } from './global-setup.js';
import { Redis } from 'ioredis';
import { RedisProcs, sleep, until } from './redis-procs.js';

/**
 * Startup guards of `cycles runtime` (ADR 0018), on the real process (through tsx) against private
 * redis-servers: an eviction policy is refused unless CYCLES_ALLOW_EVICTION=true, AOF off is
 * warned about, a renamed CONFIG command is reported as "could not check", and a Redis that is
 * down at start is waited for with health DOWN on the port meanwhile.
 */

const TSX = ['--import', 'tsx', 'src/cli.ts'];
const procs = new RedisProcs();
const children: ChildProcess[] = [];

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await procs.stopAll();
});

interface Started {
  child: ChildProcess;
  port: number;
  out: () => string;
  exited: Promise<number | null>;
}

function start(redisPort: number, runtimePort: number, extra: Record<string, string> = {}, command = 'runtime'): Started {
  let out = '';
  const child = spawn(process.execPath, [...TSX, command], {
    env: {
      ...process.env,
      REDIS_URL: `redis://127.0.0.1:${redisPort}`,
      ADMIN_API_KEY: 'startup-test-admin',
      CYCLES_KEY_PREFIX: `cystart${randomBytes(2).toString('hex')}`,
      CYCLES_HOST: '127.0.0.1',
      CYCLES_RUNTIME_PORT: String(runtimePort),
      CYCLES_WORKERS: '1',
      LOG_LEVEL: 'info',
      ...extra,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, port: runtimePort, out: () => out, exited };
}

/** The pino lines of a process, parsed (other output lines are skipped). */
function logLines(text: string): Array<{ level: number; msg: string; [k: string]: unknown }> {
  return text.split('\n').flatMap((l) => {
    try {
      const v = JSON.parse(l);
      return typeof v?.level === 'number' ? [v] : [];
    } catch {
      return [];
    }
  });
}

const get = (port: number, path: string) => fetch(`http://127.0.0.1:${port}${path}`);

async function stop(s: Started): Promise<void> {
  if (s.child.exitCode === null) s.child.kill('SIGTERM');
  await s.exited;
}

describe('startup guards', () => {
  it('refuses an eviction policy with a clear message; starts with CYCLES_ALLOW_EVICTION=true and logs it at error level, with AOF off warned', { timeout: 50_000 }, async () => {
    const [redisPort, refusedPort, allowedPort] = await freePorts(3);
    await procs.server(redisPort!, ['--maxmemory-policy', 'allkeys-lru', '--appendonly', 'no']);
    const refused = start(redisPort!, refusedPort!);
    const allowed = start(redisPort!, allowedPort!, { CYCLES_ALLOW_EVICTION: 'true' });
    try {
      expect(await refused.exited).toBe(1);
      expect(refused.out()).toMatch(/Refusing to start: 127\.0\.0\.1:\d+ has maxmemory-policy 'allkeys-lru'/);
      expect(refused.out()).toContain('CYCLES_ALLOW_EVICTION=true');

      await until(async () => (await get(allowed.port, '/actuator/health/readiness')).ok, 40_000, 'readiness with eviction allowed');
      const lines = logLines(allowed.out());
      expect(lines.some((l) => l.level === 50 && /maxmemory-policy is 'allkeys-lru'/.test(l.msg))).toBe(true);
      expect(lines.some((l) => l.level === 40 && /appendonly is off/.test(l.msg))).toBe(true);
    } finally {
      await stop(refused);
      await stop(allowed);
    }
  });

  it('starts when CONFIG is renamed, and says the settings could not be checked', { timeout: 50_000 }, async () => {
    const [redisPort, runtimePort] = await freePorts(2);
    await procs.server(redisPort!, ['--rename-command', 'CONFIG', '']);
    const s = start(redisPort!, runtimePort!);
    try {
      await until(async () => (await get(s.port, '/actuator/health/readiness')).ok, 40_000, 'readiness');
      expect(logLines(s.out()).some((l) => l.level === 40 && /could not check maxmemory-policy/.test(l.msg))).toBe(true);
    } finally {
      await stop(s);
    }
  });

  it('waits for a Redis that is down at start, serving health DOWN meanwhile, then serves', { timeout: 50_000 }, async () => {
    const [redisPort, runtimePort] = await freePorts(2);
    const s = start(redisPort!, runtimePort!);
    try {
      await until(async () => (await get(s.port, '/actuator/health/liveness')).ok, 40_000, 'standby port');
      const health = await get(s.port, '/actuator/health');
      expect(health.status).toBe(503);
      expect(await health.json()).toEqual({ status: 'DOWN', components: { redis: { status: 'DOWN' } } });
      expect((await get(s.port, '/actuator/health/readiness')).status).toBe(503);
      const reserve = await fetch(`http://127.0.0.1:${s.port}/v1/reservations`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      expect(reserve.status).toBe(503);
      const body = (await reserve.json()) as Record<string, unknown>;
      expect(Object.keys(body).sort()).toEqual(['error', 'message', 'request_id', 'trace_id']);
      expect(body.request_id).toBe(reserve.headers.get('x-request-id'));
      await sleep(1000);
      expect(s.child.exitCode).toBeNull();
      expect(logLines(s.out()).filter((l) => /Redis is not reachable yet; retrying/.test(l.msg)).length).toBeGreaterThanOrEqual(2);

      await procs.server(redisPort!, ['--appendonly', 'yes']);
      await until(async () => (await get(s.port, '/actuator/health/readiness')).ok, 30_000, 'readiness once Redis is up');
      // The real runtime app now answers: an unauthenticated reserve is a 401, not a 503.
      const after = await fetch(`http://127.0.0.1:${s.port}/v1/reservations`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      expect(after.status).toBe(401);
    } finally {
      await stop(s);
    }
  });

  it('authenticates every connection, BullMQ included, as an ACL user from the URL, and never logs the password', { timeout: 50_000 }, async () => {
    const [redisPort, runtimePort, adminPort, eventsPort] = await freePorts(4);
    const password = `pw-${randomBytes(6).toString('hex')}`;
    await procs.server(redisPort!, ['--user', 'cycles', 'on', `>${password}`, '~*', '&*', '+@all', '--user', 'default', 'off', '--appendonly', 'yes']);
    const s = start(redisPort!, runtimePort!, {
      REDIS_URL: `redis://cycles:${password}@127.0.0.1:${redisPort}`,
      CYCLES_ADMIN_PORT: String(adminPort),
      CYCLES_EVENTS_PORT: String(eventsPort),
    }, 'all');
    const inspect = new Redis({ host: '127.0.0.1', port: redisPort!, username: 'cycles', password, maxRetriesPerRequest: 1 });
    try {
      await until(async () => (await get(eventsPort!, '/actuator/health')).ok, 40_000, 'events service healthy');
      const names = await until(async () => {
        const list = String(await inspect.call('CLIENT', 'LIST'));
        return list.includes('name=cycles-events-deliveries') && list.includes('name=cycles-events-notify') ? list : undefined;
      }, 10_000, 'BullMQ worker connections');
      expect(names).toContain('name=cycles-sub');
      // Every connection — commands, pub/sub, BullMQ queues, workers and their blocking
      // duplicates — is authenticated as the URL's user.
      const clients = names.trim().split('\n');
      expect(clients.length).toBeGreaterThan(8);
      for (const line of clients) expect(line).toMatch(/ user=cycles /);
      const logged = s.out();
      expect(logged).toContain('redis://cycles:***@127.0.0.1');
      expect(logged).not.toContain(password);
    } finally {
      inspect.disconnect();
      await stop(s);
    }
  });
});
