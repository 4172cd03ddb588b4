import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { freePorts } from './global-setup.js';
import { ADMIN_KEY, createTenant, idem, json, startHarness, TestTenant, type Harness } from './helpers.js';
import { direct, RedisProcs, until } from './redis-procs.js';

/**
 * Backup and restore (docs/operations.md, "Backup and restore"): a realistic workload on a private
 * redis-server, its AOF (Redis 7 multi-part: appendonlydir/) or RDB (dump.rdb) copied the way the
 * procedure says, a fresh redis-server started from the copy on another port, and a new service
 * pointed at it. Every ledger, reservation, API key and stored idempotent answer must come back
 * exactly.
 */

const procs = new RedisProcs();
const harnesses: Harness[] = [];
const tmpDirs: string[] = [];
/** Reservations are held far longer than the test runs, so nothing expires between backup and checks. */
const TTL = 3_000_000;

afterEach(async () => {
  await Promise.all(harnesses.splice(0).map((h) => h.close().catch(() => undefined)));
});

afterAll(async () => {
  await procs.stopAll();
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

function tmp(label: string): string {
  const d = mkdtempSync(join(tmpdir(), `cycles-backup-${label}-`));
  tmpDirs.push(d);
  return d;
}

async function harnessOn(port: number, keyPrefix: string): Promise<Harness> {
  const h = await startHarness({ redis: { mode: 'standalone', url: `redis://127.0.0.1:${port}` }, keyPrefix, authCacheTtlMs: 0 });
  harnesses.push(h);
  return h;
}

/** Stops a redis-server the documented way (SHUTDOWN: final fsync of the AOF) and waits for the process to end. */
async function shutdown(port: number, child: { once(e: 'exit', f: () => void): unknown; exitCode: number | null }): Promise<void> {
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  const c = direct(port);
  await c.call('SHUTDOWN').catch(() => undefined); // the connection drops as the server exits
  c.disconnect();
  await exited;
}

const adminGet = (h: Harness, url: string) => h.admin.inject({ method: 'GET', url, headers: { 'x-admin-api-key': ADMIN_KEY } });

interface Recorded {
  tenant: TestTenant;
  method: 'POST';
  url: string;
  payload: unknown;
  status: number;
  body: unknown;
}

/**
 * The workload: two tenants with budgets on several scopes, funding operations, reservations
 * committed, released and still held, a direct debit, a commit into overdraft (debt), a revoked
 * key. Every mutating runtime request is recorded so its idempotent replay can be checked later.
 */
class Workload {
  readonly tenants: TestTenant[] = [];
  readonly recorded: Recorded[] = [];
  readonly reservationIds: string[] = [];
  /** Reservation id → owning tenant. */
  readonly owner = new Map<string, TestTenant>();
  /** Reservations left ACTIVE at the end of run(). */
  readonly held: string[] = [];
  revokedKey = '';

  constructor(readonly h: Harness) {}

  async post(t: TestTenant, url: string, payload: Record<string, unknown>): Promise<any> {
    const res = await t.post(url, payload);
    expect([200, 201], res.body).toContain(res.statusCode);
    this.recorded.push({ tenant: t, method: 'POST', url, payload, status: res.statusCode, body: json(res) });
    return json(res);
  }

  async reserve(t: TestTenant, amount: number, over: Record<string, unknown> = {}): Promise<string> {
    const body = await this.post(t, '/v1/reservations', t.reserveBody(amount, { ttl_ms: TTL, ...over }));
    expect(body.decision).toBe('ALLOW');
    this.reservationIds.push(body.reservation_id);
    this.owner.set(body.reservation_id, t);
    return body.reservation_id as string;
  }

  async run(): Promise<void> {
    const h = this.h;
    for (let i = 0; i < 2; i++) {
      const t = await createTenant(h, {
        budgets: [
          ['', 1_000_000],
          ['workspace:prod', 100_000],
          ['workspace:dev', 10_000, { overdraft: 5_000 }],
        ],
      });
      this.tenants.push(t);
      await t.fund('workspace:prod', 'CREDIT', 25_000 + i);
      await t.fund('workspace:prod', 'DEBIT', 3_000);
      for (let n = 0; n < 6; n++) {
        const rid = await this.reserve(t, 1_000 + 111 * n, { ws: n % 2 ? 'prod' : 'dev' });
        if (n % 3 === 0) await this.post(t, `/v1/reservations/${rid}/commit`, { idempotency_key: idem('c'), actual: { unit: 'USD_MICROCENTS', amount: 700 + n } });
        else if (n % 3 === 1) await this.post(t, `/v1/reservations/${rid}/release`, { idempotency_key: idem('r') });
        else this.held.push(rid);
      }
      // A direct debit and an extension of a held reservation.
      await this.post(t, '/v1/events', t.eventBody(1_234 + i));
      await this.post(t, `/v1/reservations/${this.held.at(-1)}/extend`, { idempotency_key: idem('x'), extend_by_ms: 60_000 });
      // Debt: commit above the estimate and above what is left, into the overdraft.
      const od = await this.reserve(t, 8_000, { ws: 'dev', overage_policy: 'ALLOW_WITH_OVERDRAFT' });
      await this.post(t, `/v1/reservations/${od}/commit`, { idempotency_key: idem('c'), actual: { unit: 'USD_MICROCENTS', amount: 12_000 } });
      await t.fund('workspace:dev', 'REPAY_DEBT', 250);
      const dev = (await t.ledger())[`${t.scope('workspace:dev')}|USD_MICROCENTS`]!;
      expect(dev.debt).toBeGreaterThan(0);
      expect(dev.reserved).toBeGreaterThan(0);
    }
    // A second key for the first tenant, revoked: it must stay revoked after a restore.
    const t0 = this.tenants[0]!;
    const k = await h.admin.inject({
      method: 'POST',
      url: '/v1/admin/api-keys',
      headers: { 'x-admin-api-key': ADMIN_KEY },
      payload: { tenant_id: t0.id, name: 'revoked', permissions: ['balances:read'] },
    });
    expect(k.statusCode, k.body).toBe(201);
    const del = await h.admin.inject({ method: 'DELETE', url: `/v1/admin/api-keys/${json(k).key_id}`, headers: { 'x-admin-api-key': ADMIN_KEY } });
    expect(del.statusCode, del.body).toBe(200);
    this.revokedKey = json(k).key_secret;
  }
}

/** Everything observable about the workload's data, through the public APIs of `h`. */
async function snapshot(h: Harness, w: Workload): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const t0 of w.tenants) {
    const t = new TestTenant(h, t0.id, t0.key);
    out[`ledger:${t.id}`] = await t.ledger();
    const budgets = await adminGet(h, `/v1/admin/budgets?tenant_id=${t.id}&limit=100`);
    expect(budgets.statusCode, budgets.body).toBe(200);
    out[`budgets:${t.id}`] = json(budgets);
    const keys = await adminGet(h, `/v1/admin/api-keys?tenant_id=${t.id}&limit=100`);
    expect(keys.statusCode, keys.body).toBe(200);
    out[`keys:${t.id}`] = json(keys);
    const tenant = await adminGet(h, `/v1/admin/tenants/${t.id}`);
    expect(tenant.statusCode, tenant.body).toBe(200);
    out[`tenant:${t.id}`] = json(tenant);
    const list = await t.get(`/v1/reservations?tenant=${t.id}&limit=200`);
    expect(list.statusCode, list.body).toBe(200);
    out[`reservation-list:${t.id}`] = json(list);
  }
  for (const rid of w.reservationIds) {
    const owner = w.owner.get(rid)!;
    const r = await new TestTenant(h, owner.id, owner.key).get(`/v1/reservations/${rid}`);
    expect(r.statusCode, r.body).toBe(200);
    out[`reservation:${rid}`] = json(r);
  }
  return out;
}

/** remaining_ttl_ms is computed from the clock at reply time (0 once the reservation is no longer ACTIVE). */
function withoutClock(body: any): any {
  if (!body || typeof body !== 'object') return body;
  const { remaining_ttl_ms: _clock, ...rest } = body;
  return rest;
}

/** The restored service behaves as the original did: stored answers replay, keys authenticate, ledgers move. */
async function expectServiceWorks(h: Harness, w: Workload, before: Record<string, unknown>): Promise<void> {
  expect(await snapshot(h, w)).toEqual(before);
  // Every recorded mutation replays its stored answer (same idempotency key, same body)...
  for (const r of w.recorded) {
    const res = await h.runtime.inject({ method: r.method, url: r.url, headers: { 'x-cycles-api-key': r.tenant.key }, payload: r.payload as object });
    expect(res.statusCode, `${r.url} ${res.body}`).toBe(r.status);
    expect(withoutClock(json(res)), r.url).toEqual(withoutClock(r.body));
  }
  // ...and moved nothing.
  expect(await snapshot(h, w)).toEqual(before);
  // The revoked key stays revoked.
  const revoked = await h.runtime.inject({ method: 'GET', url: `/v1/balances?tenant=${w.tenants[0]!.id}`, headers: { 'x-cycles-api-key': w.revokedKey } });
  expect(revoked.statusCode).toBe(401);
  // Live keys work and the restored ledgers take new work with the right arithmetic.
  for (const t0 of w.tenants) {
    const t = new TestTenant(h, t0.id, t0.key);
    const prod = (await t.ledger())[`${t.scope('workspace:prod')}|USD_MICROCENTS`]!;
    const rid = await t.reserveOk(500, { ttl_ms: TTL });
    const c = await t.commit(rid, 400);
    expect(c.statusCode, c.body).toBe(200);
    const after = (await t.ledger())[`${t.scope('workspace:prod')}|USD_MICROCENTS`]!;
    expect(after).toEqual({ ...prod, remaining: prod.remaining - 400, spent: prod.spent + 400 });
  }
  // A held reservation can still be committed.
  const heldRid = w.held[0]!;
  const owner = w.owner.get(heldRid)!;
  const c = await new TestTenant(h, owner.id, owner.key).commit(heldRid, 10);
  expect(c.statusCode, c.body).toBe(200);
}

describe('backup and restore', () => {
  it('AOF: a copy of appendonlydir taken live (rewrites paused) and one taken after SHUTDOWN each bring the ledgers back exactly', async () => {
    const [portA, portB, portC] = await freePorts(3);
    const dataDir = tmp('aof-data');
    const prefix = `bk${Date.now().toString(36)}`;
    const original = await procs.server(portA!, ['--dir', dataDir, '--appendonly', 'yes', '--appendfsync', 'always', '--appenddirname', 'appendonlydir']);
    const h = await harnessOn(portA!, prefix);
    const w = new Workload(h);
    await w.run();
    const atBackup = await snapshot(h, w);
    const recordedAtBackup = w.recorded.length;
    const reservationsAtBackup = w.reservationIds.length;
    const heldAtBackup = [...w.held];

    // Live backup (docs/operations.md): pause automatic rewrites, wait out any rewrite in
    // progress, copy the directory, resume.
    const admin = direct(portA!);
    const rewritePct = ((await admin.call('CONFIG', 'GET', 'auto-aof-rewrite-percentage')) as string[])[1]!;
    await admin.call('CONFIG', 'SET', 'auto-aof-rewrite-percentage', '0');
    await until(async () => /aof_rewrite_in_progress:0/.test(await admin.info('persistence')), 10_000, 'no AOF rewrite in progress');
    const liveCopy = tmp('aof-live');
    cpSync(join(dataDir, 'appendonlydir'), join(liveCopy, 'appendonlydir'), { recursive: true });
    await admin.call('CONFIG', 'SET', 'auto-aof-rewrite-percentage', rewritePct);
    admin.disconnect();
    expect(readdirSync(join(liveCopy, 'appendonlydir')).some((f) => f.endsWith('.manifest'))).toBe(true);

    // More work after the live backup: it must be in the final copy, and not in the live one.
    const t0 = w.tenants[0]!;
    await w.post(t0, `/v1/reservations/${w.held[0]}/commit`, { idempotency_key: idem('c'), actual: { unit: 'USD_MICROCENTS', amount: 321 } });
    w.held.shift();
    await w.reserve(t0, 2_222, { ws: 'prod' });
    w.held.push(w.reservationIds.at(-1)!);
    const atShutdown = await snapshot(h, w);
    expect(atShutdown).not.toEqual(atBackup);

    // Cold backup: stop the services, SHUTDOWN Redis, copy the directory.
    await Promise.all(harnesses.splice(0).map((x) => x.close()));
    await shutdown(portA!, original);
    const coldCopy = tmp('aof-cold');
    cpSync(join(dataDir, 'appendonlydir'), join(coldCopy, 'appendonlydir'), { recursive: true });
    expect(existsSync(join(dataDir, 'dump.rdb'))).toBe(false); // the AOF alone carries the data

    // Restore the cold copy on a new server and port: the state at shutdown, exactly.
    await procs.server(portB!, ['--dir', coldCopy, '--appendonly', 'yes', '--appendfsync', 'always', '--appenddirname', 'appendonlydir']);
    const restored = await harnessOn(portB!, prefix);
    await expectServiceWorks(restored, w, atShutdown);

    // Restore the live copy: the state at the moment of the backup, without the later work.
    await procs.server(portC!, ['--dir', liveCopy, '--appendonly', 'yes', '--appendfsync', 'always', '--appenddirname', 'appendonlydir']);
    const fromLive = await harnessOn(portC!, prefix);
    const wAtBackup = Object.assign(new Workload(fromLive), {
      tenants: w.tenants,
      recorded: w.recorded.slice(0, recordedAtBackup),
      reservationIds: w.reservationIds.slice(0, reservationsAtBackup),
      owner: w.owner,
      held: heldAtBackup,
      revokedKey: w.revokedKey,
    });
    await expectServiceWorks(fromLive, wAtBackup, atBackup);
  }, 60_000);

  it('RDB: BGSAVE, copy dump.rdb, start a new server from it: ledgers, reservations, keys and replays come back exactly', async () => {
    const [portA, portB] = await freePorts(2);
    const dataDir = tmp('rdb-data');
    const prefix = `bkr${Date.now().toString(36)}`;
    await procs.server(portA!, ['--dir', dataDir, '--appendonly', 'no', '--dbfilename', 'dump.rdb']);
    const h = await harnessOn(portA!, prefix);
    const w = new Workload(h);
    await w.run();
    const before = await snapshot(h, w);

    // BGSAVE and wait for it to finish (what a cron backup does), then copy the file.
    const admin = direct(portA!);
    expect(await admin.call('BGSAVE')).toMatch(/Background saving started/);
    await until(async () => {
      const info = await admin.info('persistence');
      return /rdb_bgsave_in_progress:0\r/.test(info) && /rdb_last_bgsave_status:ok/.test(info) && /rdb_changes_since_last_save:0\r/.test(info);
    }, 10_000, 'BGSAVE to finish');
    expect(existsSync(join(dataDir, 'dump.rdb'))).toBe(true);
    admin.disconnect();
    const copy = tmp('rdb-copy');
    cpSync(join(dataDir, 'dump.rdb'), join(copy, 'dump.rdb'));
    // The original keeps running; the restore goes to a new server.
    await procs.server(portB!, ['--dir', copy, '--appendonly', 'no', '--dbfilename', 'dump.rdb']);
    const restored = await harnessOn(portB!, prefix);
    await expectServiceWorks(restored, w, before);
  }, 60_000);
});
