import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { Cluster, type Redis } from 'ioredis';
import type { RedisClient } from './redis.js';

/**
 * Loads the Lua scripts of src/lua (BullMQ style: `name-N.lua`, N = number of fixed KEYS),
 * inlines `--- @include "x"` lines from lua/includes; every call is one EVALSHA (see registerScripts).
 */
const LUA_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'lua');
const INCLUDE = /^--- @include "([a-z0-9-]+)"\s*$/gm;

export interface ScriptDef {
  name: string;
  fixedKeys: number;
  source: string;
}

function inline(source: string, seen: Set<string> = new Set()): string {
  return source.replace(INCLUDE, (_line, name: string) => {
    if (seen.has(name)) return '';
    seen.add(name);
    return inline(readFileSync(join(LUA_DIR, 'includes', `${name}.lua`), 'utf8'), seen);
  });
}

export function loadScriptDefs(): ScriptDef[] {
  const defs: ScriptDef[] = [];
  for (const file of readdirSync(LUA_DIR)) {
    const match = /^([a-z-]+)-(\d+)\.lua$/.exec(file);
    if (!match) continue;
    const [, name, keys] = match;
    if (defs.some((d) => d.name === name)) throw new Error(`two Lua scripts are named '${name}' in ${LUA_DIR}`);
    defs.push({ name: name!, fixedKeys: Number(keys), source: inline(readFileSync(join(LUA_DIR, file), 'utf8')) });
  }
  return defs;
}

export type { RedisClient } from './redis.js';

/** The result of a script: Redis turns Lua arrays into nested arrays of strings and integers. */
export type ScriptReply = Array<string | number | null>;

export interface Scripts {
  run(name: string, keys: string[], args: Array<string | number>): Promise<ScriptReply>;
}

/** Durability options of script writes (CYCLES_REDIS_WAIT_REPLICAS, ADR 0018). */
export interface ScriptWriteOptions {
  /** After each script, WAIT until this many replicas hold its writes; 0 = do not wait. */
  waitReplicas?: number;
  /** How long WAIT may block before the script's caller gets an error. */
  waitTimeoutMs?: number;
}

/**
 * A write that Redis applied but fewer replicas than required acknowledged in time. The caller
 * does not know whether the write survives a failover, so the request fails and the client
 * retries with its idempotency key (a replay if the write survived, a fresh apply if it was
 * lost). The message carries ETIMEDOUT so the API maps it to the 503 "Storage is unavailable;
 * retry with the same idempotency key" (src/api/base.ts).
 */
export class ReplicaAckTimeoutError extends Error {
  constructor(acked: number, wanted: number, timeoutMs: number) {
    super(`ETIMEDOUT: ${acked} of ${wanted} replicas acknowledged the write within ${timeoutMs} ms`);
    this.name = 'ReplicaAckTimeoutError';
  }
}

/** CRC16/XMODEM of a key's hash tag (or the whole key): the Redis Cluster slot. */
function keySlot(key: string): number {
  const open = key.indexOf('{');
  if (open !== -1) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  let crc = 0;
  for (const byte of Buffer.from(key, 'utf8')) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

/**
 * The connection that carried a write to `key`: WAIT counts the replicas that hold the writes of
 * its own connection, so on a Cluster it must go to the node that owns the key's slot.
 */
function connectionFor(client: RedisClient, key: string): Redis | undefined {
  if (!(client instanceof Cluster)) return client;
  const owner = client.slots[keySlot(key)]?.[0];
  return client.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === owner);
}

const isNoScript = (err: unknown) => err instanceof Error && err.message.includes('NOSCRIPT');

/**
 * Registers every script with `numberOfKeys` left open: scripts that touch a variable number of
 * ledgers (reserve, event) receive their fixed keys first and the ledgers after them.
 *
 * Each call is an EVALSHA (EVAL once per node on NOSCRIPT, which also caches the script there).
 * Calling EVALSHA by name, rather than through an ioredis custom command, lets ioredis find the
 * first key of the call: on Cluster, auto-pipelining groups commands by the node that owns their
 * first key, and a custom command's first argument is the key count, which would mix keys of
 * different nodes into one pipeline (rejected by ioredis).
 */
export function registerScripts(
  client: RedisClient,
  onTiming: (script: string, seconds: number, result: string) => void = () => {},
  write: ScriptWriteOptions = {},
): Scripts {
  const defs = new Map(loadScriptDefs().map((d) => [d.name, { source: d.source, sha: createHash('sha1').update(d.source).digest('hex') }]));
  const waitReplicas = write.waitReplicas ?? 0;
  const waitTimeoutMs = write.waitTimeoutMs ?? 1000;
  const waitForReplicas = async (key: string) => {
    const conn = connectionFor(client, key);
    if (!conn) throw new ReplicaAckTimeoutError(0, waitReplicas, waitTimeoutMs);
    const acked = Number(await conn.call('WAIT', waitReplicas, waitTimeoutMs));
    if (acked < waitReplicas) throw new ReplicaAckTimeoutError(acked, waitReplicas, waitTimeoutMs);
  };
  return {
    async run(name, keys, args) {
      const def = defs.get(name);
      if (!def) throw new Error(`unknown script ${name}`);
      const started = process.hrtime.bigint();
      try {
        let reply: ScriptReply;
        try {
          reply = (await client.evalsha(def.sha, keys.length, ...keys, ...args)) as ScriptReply;
        } catch (err) {
          if (!isNoScript(err)) throw err;
          reply = (await client.eval(def.source, keys.length, ...keys, ...args)) as ScriptReply;
        }
        if (waitReplicas > 0 && keys[0] !== undefined) await waitForReplicas(keys[0]);
        onTiming(name, Number(process.hrtime.bigint() - started) / 1e9, String(reply[0]));
        return reply;
      } catch (err) {
        onTiming(name, Number(process.hrtime.bigint() - started) / 1e9, 'redis_error');
        throw err;
      }
    },
  };
}
