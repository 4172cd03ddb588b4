// CPU time used by the server process, redis-server and the benchmark process itself during a
// timed run, as a percentage of one core. It tells which of the three was the bottleneck (a
// process near 100% is saturating its main thread) on a machine where all three share the CPUs.
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import os from 'node:os';

let clockTicks;
function ticksPerSecond() {
  if (clockTicks === undefined) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    clockTicks = Number(r.stdout?.trim()) || 100;
  }
  return clockTicks;
}

/** utime + stime of a process in seconds (Linux /proc), or undefined elsewhere. */
function procCpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
  } catch {
    return undefined;
  }
}

async function redisCpuSeconds(redis) {
  try {
    const info = await redis.info('cpu');
    const user = Number(/used_cpu_user:([0-9.]+)/.exec(info)?.[1]);
    const sys = Number(/used_cpu_sys:([0-9.]+)/.exec(info)?.[1]);
    return Number.isFinite(user + sys) ? user + sys : undefined;
  } catch {
    return undefined;
  }
}

/** Calls and total microseconds of EVALSHA so far (INFO commandstats): Redis-side script time. */
async function evalshaStats(redis) {
  try {
    const info = await redis.info('commandstats');
    const m = /cmdstat_evalsha:calls=(\d+),usec=(\d+)/.exec(info);
    return m ? { calls: Number(m[1]), usec: Number(m[2]) } : { calls: 0, usec: 0 };
  } catch {
    return undefined;
  }
}

export async function cpuSample(ctx) {
  const self = process.cpuUsage();
  return {
    at: performance.now(),
    server: ctx.server.proc.child.pid ? procCpuSeconds(ctx.server.proc.child.pid) : undefined,
    redis: ctx.redisClient ? await redisCpuSeconds(ctx.redisClient) : undefined,
    evalsha: ctx.redisClient ? await evalshaStats(ctx.redisClient) : undefined,
    bench: (self.user + self.system) / 1e6,
    load1: os.loadavg()[0],
  };
}

export function cpuPercent(a, b) {
  const wall = (b.at - a.at) / 1000;
  const pct = (x, y) => (x === undefined || y === undefined || wall <= 0 ? null : Math.round(((y - x) / wall) * 1000) / 10);
  const scriptCalls = a.evalsha && b.evalsha ? b.evalsha.calls - a.evalsha.calls : 0;
  return {
    server_pct: pct(a.server, b.server),
    redis_pct: pct(a.redis, b.redis),
    bench_pct: pct(a.bench, b.bench),
    load1_before: a.load1,
    load1_after: b.load1,
    // Time Redis spent inside EVALSHA per call (script execution, excluding network and queueing).
    redis_evalsha_calls: scriptCalls,
    redis_evalsha_usec_per_call: scriptCalls > 0 ? Math.round(((b.evalsha.usec - a.evalsha.usec) / scriptCalls) * 10) / 10 : null,
  };
}
