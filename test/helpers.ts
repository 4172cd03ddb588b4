import { randomBytes } from 'node:crypto';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { pino } from 'pino';
import { expect, inject } from 'vitest';
import { createSystem, type System, type SystemOptions } from '../src/system.js';
import type { RedisSpec } from '../src/store/redis.js';

export const ADMIN_KEY = 'test-admin-key';
export const USD = 'USD_MICROCENTS';

export interface Harness {
  system: System;
  runtime: FastifyInstance;
  admin: FastifyInstance;
  close(): Promise<void>;
}

/** The whole system against the test Redis, with apps driven through app.inject (real HTTP semantics). */
export async function startHarness(
  overrides: { expiryIntervalMs?: number; authCacheTtlMs?: number; keyPrefix?: string; events?: Partial<SystemOptions>; redis?: RedisSpec } = {},
): Promise<Harness> {
  const system = await createSystem({
    // A Sentinel or Cluster test passes its own topology; everything else uses the test Redis.
    ...(overrides.redis ? { redis: overrides.redis } : { redisUrl: inject('redisUrl') }),
    adminApiKey: ADMIN_KEY,
    keyPrefix: overrides.keyPrefix ?? 'cytest',
    logger: pino({ level: 'silent' }),
    bodyLimitBytes: 65_536,
    authCacheTtlMs: overrides.authCacheTtlMs ?? 1000,
    reservationRetentionMs: 86_400_000,
    expiryIntervalMs: overrides.expiryIntervalMs ?? 60_000,
    expiryBatchSize: 100,
    ...(overrides.events ?? {}),
  });
  const runtime = await system.buildRuntimeApp();
  const admin = await system.buildAdminApp();
  return {
    system,
    runtime,
    admin,
    async close() {
      await runtime.close();
      await admin.close();
      await system.close();
    },
  };
}

export function uniqueTenantId(label = 't'): string {
  return `${label}-${randomBytes(5).toString('hex')}`;
}

export function idem(label = 'k'): string {
  return `${label}-${randomBytes(8).toString('hex')}`;
}

export function json(res: LightMyRequestResponse): any {
  return res.body === '' ? undefined : JSON.parse(res.body);
}

/** A provisioned tenant: record, runtime key and the budgets asked for. */
export class TestTenant {
  constructor(
    readonly h: Harness,
    readonly id: string,
    readonly key: string,
  ) {}

  scope(rel = ''): string {
    return rel ? `tenant:${this.id}/${rel}` : `tenant:${this.id}`;
  }

  async budget(rel: string, allocated: number, opts: { unit?: string; overdraft?: number; policy?: string } = {}) {
    const unit = opts.unit ?? USD;
    const body: Record<string, unknown> = { tenant_id: this.id, scope: this.scope(rel), unit, allocated: { unit, amount: allocated } };
    if (opts.overdraft !== undefined) body.overdraft_limit = { unit, amount: opts.overdraft };
    if (opts.policy !== undefined) body.commit_overage_policy = opts.policy;
    const res = await this.h.admin.inject({ method: 'POST', url: '/v1/admin/budgets', headers: { 'x-admin-api-key': ADMIN_KEY }, payload: body });
    if (res.statusCode !== 201) throw new Error(`budget create failed: ${res.statusCode} ${res.body}`);
    return json(res);
  }

  reserveBody(amount: number, over: Record<string, unknown> = {}) {
    const { ws, unit, ...rest } = over as { ws?: string; unit?: string };
    return {
      idempotency_key: idem('res'),
      subject: { tenant: this.id, workspace: ws ?? 'prod' },
      action: { kind: 'llm.completion', name: 'm' },
      estimate: { unit: unit ?? USD, amount },
      ...rest,
    };
  }

  /** A direct-debit body (POST /v1/events); `over` may replace any field, `ws`/`unit` as for reserveBody. */
  eventBody(amount: number, over: Record<string, unknown> = {}) {
    const { ws, unit, ...rest } = over as { ws?: string; unit?: string };
    return {
      idempotency_key: idem('ev'),
      subject: { tenant: this.id, workspace: ws ?? 'prod' },
      action: { kind: 'llm.completion', name: 'm' },
      actual: { unit: unit ?? USD, amount },
      ...rest,
    };
  }

  /** A decide body (POST /v1/decide); `over` as for eventBody. */
  decideBody(amount: number, over: Record<string, unknown> = {}) {
    const { ws, unit, ...rest } = over as { ws?: string; unit?: string };
    return {
      idempotency_key: idem('dec'),
      subject: { tenant: this.id, workspace: ws ?? 'prod' },
      action: { kind: 'llm.completion', name: 'm' },
      estimate: { unit: unit ?? USD, amount },
      ...rest,
    };
  }

  /** A funding operation on one scope with the admin key; it must succeed. */
  async fund(rel: string, operation: string, amount: number): Promise<any> {
    const res = await this.h.admin.inject({
      method: 'POST',
      url: `/v1/admin/budgets/fund?scope=${encodeURIComponent(this.scope(rel))}&unit=${USD}&tenant_id=${this.id}`,
      headers: { 'x-admin-api-key': ADMIN_KEY },
      payload: { operation, amount: { unit: USD, amount } },
    });
    expect(res.statusCode, res.body).toBe(200);
    return json(res);
  }

  post(url: string, payload: unknown, headers: Record<string, string> = {}) {
    return this.h.runtime.inject({ method: 'POST', url, headers: { 'x-cycles-api-key': this.key, ...headers }, payload: payload as object });
  }

  get(url: string, headers: Record<string, string> = {}) {
    return this.h.runtime.inject({ method: 'GET', url, headers: { 'x-cycles-api-key': this.key, ...headers } });
  }

  reserve(amount: number, over: Record<string, unknown> = {}) {
    return this.post('/v1/reservations', this.reserveBody(amount, over));
  }

  async reserveOk(amount: number, over: Record<string, unknown> = {}): Promise<string> {
    const res = await this.reserve(amount, over);
    if (res.statusCode !== 200) throw new Error(`reserve failed: ${res.statusCode} ${res.body}`);
    return json(res).reservation_id as string;
  }

  commit(rid: string, amount: number, over: Record<string, unknown> = {}) {
    return this.post(`/v1/reservations/${rid}/commit`, { idempotency_key: idem('c'), actual: { unit: USD, amount }, ...over });
  }

  release(rid: string, over: Record<string, unknown> = {}) {
    return this.post(`/v1/reservations/${rid}/release`, { idempotency_key: idem('r'), ...over });
  }

  /** Ledger of one scope read straight from GET /v1/balances. */
  async balance(rel = '', unit = USD): Promise<any> {
    const res = await this.get(`/v1/balances?tenant=${this.id}&limit=200`);
    const all = json(res).balances as any[];
    const b = all.find((x) => x.scope_path === this.scope(rel) && x.remaining.unit === unit);
    if (!b) throw new Error(`no balance for ${this.scope(rel)}`);
    return b;
  }

  /** All balances of the tenant as plain numbers, for "nothing changed" assertions. */
  async ledger(): Promise<Record<string, { remaining: number; reserved: number; spent: number; debt: number; allocated: number; over: boolean }>> {
    const res = await this.get(`/v1/balances?tenant=${this.id}&limit=200`);
    const out: Record<string, any> = {};
    for (const b of json(res).balances as any[]) {
      out[`${b.scope_path}|${b.remaining.unit}`] = {
        remaining: b.remaining.amount,
        reserved: b.reserved.amount,
        spent: b.spent.amount,
        debt: b.debt.amount,
        allocated: b.allocated.amount,
        over: b.is_over_limit,
      };
    }
    return out;
  }
}

/**
 * Creates a tenant with a runtime key (all runtime permissions) and, by default, the checklist
 * fixture: tenant scope 1,000,000 and workspace:prod 100,000 USD_MICROCENTS.
 */
export async function createTenant(
  h: Harness,
  opts: { budgets?: Array<[string, number, { unit?: string; overdraft?: number }?]>; fields?: Record<string, unknown> } = {},
): Promise<TestTenant> {
  const id = uniqueTenantId();
  const headers = { 'x-admin-api-key': ADMIN_KEY };
  const t = await h.admin.inject({ method: 'POST', url: '/v1/admin/tenants', headers, payload: { tenant_id: id, name: id, ...(opts.fields ?? {}) } });
  if (t.statusCode !== 201) throw new Error(`tenant create failed: ${t.body}`);
  const k = await h.admin.inject({
    method: 'POST',
    url: '/v1/admin/api-keys',
    headers,
    payload: {
      tenant_id: id,
      name: 'test',
      permissions: ['reservations:create', 'reservations:commit', 'reservations:release', 'reservations:extend', 'reservations:list', 'balances:read'],
    },
  });
  if (k.statusCode !== 201) throw new Error(`key create failed: ${k.body}`);
  const tenant = new TestTenant(h, id, json(k).key_secret);
  for (const [rel, allocated, o] of opts.budgets ?? [['', 1_000_000], ['workspace:prod', 100_000]]) await tenant.budget(rel, allocated, o);
  return tenant;
}

/** The normative invariant on every balance, plus reserved == sum of ACTIVE holds when given. */
export function invariantHolds(b: any): boolean {
  return b.remaining.amount === b.allocated.amount - b.spent.amount - b.reserved.amount - b.debt.amount;
}

// Assertions shared by the runtime suites.

export function expectError(res: LightMyRequestResponse, status: number, code: string): any {
  expect(res.statusCode, res.body).toBe(status);
  const b = json(res);
  expect(b.error).toBe(code);
  expect(typeof b.message).toBe('string');
  expect(typeof b.request_id).toBe('string');
  expect(b.trace_id).toBe(res.headers['x-cycles-trace-id']);
  return b;
}

export function nums(b: any) {
  return {
    allocated: b.allocated.amount,
    remaining: b.remaining.amount,
    reserved: b.reserved.amount,
    spent: b.spent.amount,
    debt: b.debt.amount,
    over: b.is_over_limit,
  };
}

export async function expectInvariant(t: TestTenant): Promise<void> {
  const all = json(await t.get(`/v1/balances?tenant=${t.id}&limit=200`)).balances as any[];
  for (const b of all) expect(invariantHolds(b), JSON.stringify(b)).toBe(true);
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function getRes(t: TestTenant, rid: string) {
  const r = await t.get(`/v1/reservations/${rid}`);
  expect(r.statusCode, r.body).toBe(200);
  return json(r);
}

export async function ledger(t: TestTenant): Promise<Record<string, any>> {
  return (await t.ledger()) as Record<string, any>;
}

