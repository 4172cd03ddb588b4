import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReplicaAckTimeoutError, registerScripts } from '../src/store/scripts.js';
import { freePorts } from './global-setup.js';
import { RedisProcs, direct, until } from './redis-procs.js';

// CYCLES_REDIS_WAIT_REPLICAS (ADR 0018): a script's caller gets its reply only once the required
// replicas hold its writes, and an error when they do not acknowledge in time.

const procs = new RedisProcs();
let master: Redis;
let replica: Redis;
let lonely: Redis;

beforeAll(async () => {
  const [masterPort, replicaPort, lonelyPort] = await freePorts(3);
  await procs.server(masterPort!, ['--repl-diskless-sync', 'yes', '--repl-diskless-sync-delay', '0']);
  await procs.server(replicaPort!, ['--replicaof', '127.0.0.1', String(masterPort)]);
  await procs.server(lonelyPort!, []);
  master = direct(masterPort!);
  replica = direct(replicaPort!);
  lonely = direct(lonelyPort!);
  await until(async () => /state=online/.test(await master.info('replication')), 10_000, 'replica online');
});

afterAll(async () => {
  for (const c of [master, replica, lonely]) c?.disconnect();
  await procs.stopAll();
});

const waits = async (r: Redis) => Number(/cmdstat_wait:calls=(\d+)/.exec(await r.info('commandstats'))?.[1] ?? 0);

describe('WAIT after scripts', () => {
  it('every acknowledged write is on the replica when the caller gets it', async () => {
    const scripts = registerScripts(master, () => {}, { waitReplicas: 1, waitTimeoutMs: 2000 });
    await master.config('RESETSTAT');
    const n = 400;
    // Any script works: the rate-limit script writes a bucket key per call (fresh key each time).
    const seen: string[] = [];
    await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const key = `cywait:{t${i % 7}}:bucket-${i}`;
        await scripts.run('rate-limit', [key, `${key}:b`], ['10', '10', '10', '10']);
        // Acknowledged: the replica holds it now, without waiting any further.
        if ((await replica.exists(key)) === 1) seen.push(key);
      }),
    );
    expect(seen.length).toBe(n);
    // One WAIT per script (sharing WAITs between concurrent scripts is measured faster, but left
    // a connection stuck behind a WAIT a demoted master never answered: see docs/operations.md).
    expect(await waits(master)).toBe(n);
  });

  it('without enough replicas every concurrent caller gets ReplicaAckTimeoutError (the write may exist; the client retries with its key)', async () => {
    const scripts = registerScripts(lonely, () => {}, { waitReplicas: 1, waitTimeoutMs: 100 });
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => scripts.run('rate-limit', [`cywait:{x}:b${i}`, `cywait:{x}:b${i}:k`], ['1', '10', '1', '10'])),
    );
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toBeInstanceOf(ReplicaAckTimeoutError);
    }
    // Applied on the master all the same: that is why the API answers 503 "retry with the same
    // key". (One call, checked at once: the bucket key lives 1 s, and the 20 WAITs above ran one
    // after the other on the connection.)
    await expect(scripts.run('rate-limit', ['cywait:{x}:one', 'cywait:{x}:one:k'], ['1', '10', '1', '10'])).rejects.toBeInstanceOf(ReplicaAckTimeoutError);
    expect(await lonely.exists('cywait:{x}:one')).toBe(1);
  });
});
