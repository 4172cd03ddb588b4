import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';

/**
 * Private redis-server processes for the topology tests (Cluster, Sentinel, startup guards): each
 * on a free port, with its own directory under one temp dir, all killed by stopAll() (and, as a
 * last resort, when the test process exits).
 */
export const execFileAsync = promisify(execFile);
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function answersPing(port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((done) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const finish = (ok: boolean) => {
      s.destroy();
      done(ok);
    };
    s.setTimeout(timeoutMs, () => finish(false));
    s.once('connect', () => s.write('PING\r\n'));
    // A server that requires authentication answers NOAUTH: it is up.
    s.once('data', (d) => finish(/^(\+PONG|-NOAUTH)/.test(d.toString())));
    s.once('error', () => finish(false));
  });
}

export async function until<T>(fn: () => Promise<T | undefined | false>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await sleep(50);
  }
}

export class RedisProcs {
  readonly dir = mkdtempSync(join(tmpdir(), 'cycles-topology-'));
  private readonly procs = new Map<number, ChildProcess>();
  private readonly onExit = () => {
    for (const p of this.procs.values()) p.kill('SIGKILL');
  };

  constructor() {
    process.once('exit', this.onExit);
  }

  /** Starts `redis-server` on `port` with its own data directory and waits until it answers. */
  async server(port: number, args: string[] = []): Promise<ChildProcess> {
    const dir = join(this.dir, String(port));
    mkdirSync(dir, { recursive: true });
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', ...args], { stdio: 'ignore' });
    this.procs.set(port, child);
    await until(async () => answersPing(port), 10_000, `redis-server on ${port}`);
    return child;
  }

  /** Starts a sentinel on `port` with the given config lines (written to its own, writable file). */
  async sentinel(port: number, lines: string[]): Promise<ChildProcess> {
    const dir = join(this.dir, `sentinel-${port}`);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'sentinel.conf');
    writeFileSync(file, [`port ${port}`, 'bind 127.0.0.1', `dir ${dir}`, ...lines, ''].join('\n'));
    const child = spawn('redis-server', [file, '--sentinel'], { stdio: 'ignore' });
    this.procs.set(port, child);
    await until(async () => answersPing(port), 10_000, `sentinel on ${port}`);
    return child;
  }

  /** SIGKILLs the process on `port` and waits for it to exit. */
  async kill(port: number): Promise<void> {
    const child = this.procs.get(port);
    this.procs.delete(port);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGKILL');
    await exited;
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.procs.keys()].map((port) => this.kill(port)));
    process.removeListener('exit', this.onExit);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A plain connection to one node, for inspecting it (never through the system under test). */
export function direct(port: number, password?: string): Redis {
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: false, maxRetriesPerRequest: 1, ...(password ? { password } : {}) });
  client.on('error', () => undefined);
  return client;
}
