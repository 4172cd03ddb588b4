import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Redis, Cluster } from 'ioredis';

/**
 * Loads the Lua scripts of src/lua (BullMQ style: `name-N.lua`, N = number of fixed KEYS),
 * inlines `--- @include "x"` lines from lua/includes, and registers each script on the ioredis
 * client as a command, so every call is one EVALSHA (ioredis falls back to EVAL on NOSCRIPT).
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

export type RedisClient = Redis | Cluster;

/** The result of a script: Redis turns Lua arrays into nested arrays of strings and integers. */
export type ScriptReply = Array<string | number | null>;

export interface Scripts {
  run(name: string, keys: string[], args: Array<string | number>): Promise<ScriptReply>;
}

/**
 * Registers every script with `numberOfKeys` left open: scripts that touch a variable number of
 * ledgers (reserve, event) receive their fixed keys first and the ledgers after them.
 */
export function registerScripts(
  client: RedisClient,
  onTiming: (script: string, seconds: number, result: string) => void = () => {},
): Scripts {
  const defs = loadScriptDefs();
  for (const def of defs) {
    client.defineCommand(`cy_${def.name.replace(/-/g, '_')}`, { lua: def.source });
  }
  const known = new Set(defs.map((d) => d.name));
  return {
    async run(name, keys, args) {
      if (!known.has(name)) throw new Error(`unknown script ${name}`);
      const command = `cy_${name.replace(/-/g, '_')}`;
      const fn = (client as unknown as Record<string, (...a: unknown[]) => Promise<ScriptReply>>)[command]!;
      const started = process.hrtime.bigint();
      try {
        const reply = await fn.call(client, keys.length, ...keys, ...args);
        onTiming(name, Number(process.hrtime.bigint() - started) / 1e9, String(reply[0]));
        return reply;
      } catch (err) {
        onTiming(name, Number(process.hrtime.bigint() - started) / 1e9, 'redis_error');
        throw err;
      }
    },
  };
}
