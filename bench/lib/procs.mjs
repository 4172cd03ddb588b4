// Child processes of the benchmark: a private redis-server and the Cycles server.
// Every child is registered so that it is stopped at the end, on error and on Ctrl-C.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { request } from './http.mjs';

const children = new Set();
const tempDirs = new Set();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A TCP port nobody listens on right now (127.0.0.1), distinct from the ones handed out before. */
const handedOut = new Set();
export async function freePort() {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const port = await new Promise((resolve, reject) => {
      const srv = net.createServer();
      srv.unref();
      srv.once('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const { port: p } = srv.address();
        srv.close(() => resolve(p));
      });
    });
    if (port !== 6379 && !handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('could not find a free port');
}

/** Spawns a child, keeps the last lines of its output, and registers it for cleanup. */
function startChild(name, command, args, options) {
  const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = { name, child, lines: [], lineCount: 0, exited: false, exitCode: null };
  const keep = (chunk) => {
    for (const line of chunk.toString().split('\n')) {
      if (line.trim() === '') continue;
      proc.lineCount += 1;
      proc.lines.push(line);
      if (proc.lines.length > 200) proc.lines.shift();
    }
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  proc.exit = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      proc.exited = true;
      proc.exitCode = code ?? signal;
      children.delete(proc);
      resolve(proc.exitCode);
    });
    child.once('error', (err) => {
      proc.exited = true;
      proc.exitCode = err.message;
      proc.lines.push(`spawn error: ${err.message}`);
      children.delete(proc);
      resolve(err.message);
    });
  });
  children.add(proc);
  return proc;
}

export function tail(proc, n = 30) {
  return proc.lines.slice(-n).join('\n');
}

/** Stops one child: SIGTERM, then SIGKILL if it is still there after `graceMs`. */
export async function stopChild(proc, graceMs = 5000) {
  if (proc.exited) return;
  try {
    proc.child.kill('SIGTERM');
  } catch {
    /* already gone */
  }
  const timedOut = await Promise.race([proc.exit.then(() => false), sleep(graceMs).then(() => true)]);
  if (timedOut && !proc.exited) {
    try {
      proc.child.kill('SIGKILL');
    } catch {
      /* already gone */
    }
    await Promise.race([proc.exit, sleep(2000)]);
  }
}

/** Stops every child this process started (server first, Redis last) and removes temp dirs. */
export async function stopAll() {
  const order = [...children].sort((a, b) => (a.name === 'redis' ? 1 : 0) - (b.name === 'redis' ? 1 : 0));
  for (const proc of order) await stopChild(proc);
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

// Last resort: a synchronous kill of whatever is left if the process exits some other way.
process.once('exit', () => {
  for (const proc of children) {
    try {
      proc.child.kill('SIGKILL');
    } catch {
      /* ignore */
    }
  }
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

export function redisServerVersion() {
  const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return undefined;
  return /v=([0-9.]+)/.exec(r.stdout)?.[1] ?? r.stdout.trim();
}

/** Starts a private, non-persistent redis-server on a free port and waits until it answers. */
export async function startRedis() {
  if (!redisServerVersion()) throw new Error('redis-server not found on PATH (install Redis 7)');
  const port = await freePort();
  const dir = mkdtempSync(join(os.tmpdir(), 'cycles-bench-redis-'));
  tempDirs.add(dir);
  const proc = startChild('redis', 'redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--daemonize', 'no', '--dir', dir, '--maxmemory-policy', 'noeviction', '--loglevel', 'warning',
    // As shipped in docker/redis/redis.conf and the CLI's local Redis (compact hashes).
    ...(process.env.BENCH_REDIS_DEFAULT_ENCODING === '1' ? [] : ['--hash-max-listpack-value', '128']),
  ], {});
  const url = `redis://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (proc.exited) throw new Error(`redis-server exited (${proc.exitCode}):\n${tail(proc)}`);
    const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on('error', () => {});
    try {
      await client.connect();
      if ((await client.ping()) === 'PONG') {
        const info = await client.info('server');
        client.disconnect();
        // BENCH_REDIS_REPLICAS=N: N private replicas of this Redis (to measure CYCLES_REDIS_WAIT_REPLICAS).
        const replicas = [];
        for (let i = 0; i < Number(process.env.BENCH_REDIS_REPLICAS ?? 0); i++) replicas.push(await startReplica(port));
        return { proc, port, url, replicas, version: /redis_version:([^\r\n]+)/.exec(info)?.[1] };
      }
    } catch {
      /* not up yet */
    }
    client.disconnect();
    await sleep(50);
  }
  throw new Error(`redis-server did not answer on port ${port} within 10 s`);
}

/** A private replica of the Redis on `masterPort`, returned once its link to the master is up. */
async function startReplica(masterPort) {
  const port = await freePort();
  const dir = mkdtempSync(join(os.tmpdir(), 'cycles-bench-replica-'));
  tempDirs.add(dir);
  const proc = startChild('replica', 'redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', dir,
    '--loglevel', 'warning', '--replicaof', '127.0.0.1', String(masterPort),
  ], {});
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (proc.exited) throw new Error(`replica exited (${proc.exitCode}):\n${tail(proc)}`);
    const client = new Redis(`redis://127.0.0.1:${port}`, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on('error', () => {});
    try {
      await client.connect();
      const info = await client.info('replication');
      client.disconnect();
      if (/master_link_status:up/.test(info)) return { proc, port };
    } catch {
      client.disconnect();
    }
    await sleep(50);
  }
  throw new Error(`replica on port ${port} did not link to its master within 10 s`);
}

/** Starts `node dist/cli.js all` on free ports and waits until both planes report ready. */
export async function startServer({ repoRoot, redisUrl, adminKey }) {
  const runtimePort = await freePort();
  const adminPort = await freePort();
  const eventsPort = await freePort();
  const env = {
    ...process.env,
    REDIS_URL: redisUrl,
    ADMIN_API_KEY: adminKey,
    CYCLES_HOST: '127.0.0.1',
    CYCLES_RUNTIME_PORT: String(runtimePort),
    CYCLES_ADMIN_PORT: String(adminPort),
    CYCLES_EVENTS_PORT: String(eventsPort),
    CYCLES_KEY_PREFIX: 'cycles',
    LOG_LEVEL: 'warn',
    NODE_ENV: 'production',
  };
  // BENCH_SERVER_NODE_ARGS passes flags to the server's node, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
  const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const proc = startChild('server', process.execPath, [...nodeArgs, join(repoRoot, 'dist', 'cli.js'), 'all'], { cwd: repoRoot, env });
  const deadline = Date.now() + 30_000;
  const ready = async (port) => {
    try {
      const r = await request({ port, method: 'GET', path: '/actuator/health/readiness', timeoutMs: 1000 });
      return r.status === 200;
    } catch {
      return false;
    }
  };
  while (Date.now() < deadline) {
    if (proc.exited) throw new Error(`server exited (${proc.exitCode}) before it was ready:\n${tail(proc)}`);
    if ((await ready(runtimePort)) && (await ready(adminPort))) return { proc, runtimePort, adminPort, eventsPort };
    await sleep(100);
  }
  throw new Error(`server was not ready within 30 s:\n${tail(proc)}`);
}
