import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, USD, createTenant, idem, json, startHarness, type Harness, type TestTenant } from './helpers.js';

/**
 * Correlation headers (runtime digest §5.1–§5.3, checklist §9 A.3–A.11; admin digest §0.4) and the
 * operational endpoints (admin digest §0.2: liveness/readiness open, other /actuator/** admin key).
 */

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => h.close());

const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const TRACE = /^[0-9a-f]{32}$/;
const ZERO = '0'.repeat(32);
const TP_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const TRACEPARENT = `00-${TP_TRACE}-00f067aa0ba902b7-01`;
const FLAT = '0af7651916cd43dd8448eb211c80319c';

/** Both correlation headers are present and well formed; error bodies repeat them exactly. */
function expectCorrelated(res: LightMyRequestResponse, label: string): string {
  const trace = res.headers['x-cycles-trace-id'];
  const rid = res.headers['x-request-id'];
  expect(typeof trace, `${label}: X-Cycles-Trace-Id`).toBe('string');
  expect(trace as string, label).toMatch(TRACE);
  expect(trace, label).not.toBe(ZERO);
  expect(typeof rid, `${label}: X-Request-Id`).toBe('string');
  expect((rid as string).length, label).toBeGreaterThan(0);
  if (res.statusCode >= 400 && res.headers['content-type']?.toString().startsWith('application/json')) {
    const body = json(res);
    expect(body.trace_id, label).toBe(trace);
    expect(body.request_id, label).toBe(rid);
  }
  return trace as string;
}

function reserveWith(t: TestTenant, headers: Record<string, string>, amount = 10) {
  return t.post('/v1/reservations', t.reserveBody(amount), headers);
}

describe('X-Request-Id and X-Cycles-Trace-Id on every response', () => {
  it('runtime plane: 2xx, 201, 4xx of every kind, unknown routes and actuator endpoints', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(100);
    const cases: Array<[string, Promise<LightMyRequestResponse>, number]> = [
      ['reserve 200', t.reserve(10), 200],
      ['get 200', t.get(`/v1/reservations/${rid}`), 200],
      ['list 200', t.get('/v1/reservations'), 200],
      ['balances 200', t.get(`/v1/balances?tenant=${t.id}`), 200],
      ['event 201', t.post('/v1/events', { idempotency_key: idem(), subject: { tenant: t.id, workspace: 'prod' }, action: { kind: 'k', name: 'n' }, actual: { unit: USD, amount: 1 } }), 201],
      ['validation 400', t.post('/v1/reservations', { ...t.reserveBody(10), bogus: 1 }), 400],
      ['malformed JSON 400', h.runtime.inject({ method: 'POST', url: '/v1/reservations', headers: { 'x-cycles-api-key': t.key, 'content-type': 'application/json' }, payload: '{' }), 400],
      ['no key 401', h.runtime.inject({ method: 'GET', url: `/v1/balances?tenant=${t.id}` }), 401],
      ['other tenant 403', t.get('/v1/balances?tenant=someone-else'), 403],
      ['unknown reservation 404', t.get(`/v1/reservations/rsv_${t.id}_${'0'.repeat(24)}`), 404],
      ['budget exceeded 409', t.reserve(10_000_000), 409],
      ['unknown route 404', h.runtime.inject({ method: 'GET', url: '/v1/nope' }), 404],
      ['health 200', h.runtime.inject({ method: 'GET', url: '/actuator/health' }), 200],
      ['liveness 200', h.runtime.inject({ method: 'GET', url: '/actuator/health/liveness' }), 200],
      ['prometheus 401', h.runtime.inject({ method: 'GET', url: '/actuator/prometheus' }), 401],
    ];
    for (const [label, pending, status] of cases) {
      const res = await pending;
      expect(res.statusCode, `${label}: ${res.body.slice(0, 300)}`).toBe(status);
      expectCorrelated(res, label);
    }
    const nf = json(await h.runtime.inject({ method: 'GET', url: '/v1/nope' }));
    expect(nf.error).toBe('NOT_FOUND');
    expect(Object.keys(nf).sort()).toEqual(['error', 'message', 'request_id', 'trace_id']);
  });

  it('an over-long path parameter still gets correlation headers and the error envelope (runtime digest §5.2, §4.1)', async () => {
    const t = await createTenant(h);
    for (const n of [110, 129]) {
      const res = await t.get(`/v1/reservations/${'r'.repeat(n)}`);
      expect([400, 404], `${n}: ${res.statusCode} ${res.body}`).toContain(res.statusCode);
      expectCorrelated(res, `reservation id of ${n} chars`);
      expect(Object.keys(json(res)).sort()).toEqual(['error', 'message', 'request_id', 'trace_id']);
    }
  });

  it('governance plane: 2xx, 4xx and unknown routes', async () => {
    const t = await createTenant(h);
    const cases: Array<[string, Promise<LightMyRequestResponse>, number]> = [
      ['get tenant 200', h.admin.inject({ method: 'GET', url: `/v1/admin/tenants/${t.id}`, headers: ADMIN }), 200],
      ['introspect 200', h.admin.inject({ method: 'GET', url: '/v1/auth/introspect', headers: { 'x-cycles-api-key': t.key } }), 200],
      ['no admin key 401', h.admin.inject({ method: 'GET', url: `/v1/admin/tenants/${t.id}` }), 401],
      ['unknown tenant 404', h.admin.inject({ method: 'GET', url: '/v1/admin/tenants/does-not-exist', headers: ADMIN }), 404],
      ['bad body 400', h.admin.inject({ method: 'POST', url: '/v1/admin/tenants', headers: ADMIN, payload: { tenant_id: 'X_Y', name: 'n' } }), 400],
      ['duplicate 409', h.admin.inject({ method: 'POST', url: '/v1/admin/tenants', headers: ADMIN, payload: { tenant_id: t.id, name: 'different' } }), 409],
      ['unknown route 404', h.admin.inject({ method: 'GET', url: '/v1/admin/nothing-here', headers: ADMIN }), 404],
      ['readiness 200', h.admin.inject({ method: 'GET', url: '/actuator/health/readiness' }), 200],
    ];
    for (const [label, pending, status] of cases) {
      const res = await pending;
      expect(res.statusCode, `${label}: ${res.body.slice(0, 300)}`).toBe(status);
      expectCorrelated(res, label);
    }
  });

  it('request ids are unique across requests (successes and errors alike)', async () => {
    const t = await createTenant(h);
    const responses = await Promise.all([
      ...Array.from({ length: 20 }, () => t.reserve(1)),
      ...Array.from({ length: 20 }, () => t.get('/v1/balances?tenant=other-tenant')),
      ...Array.from({ length: 10 }, () => h.admin.inject({ method: 'GET', url: '/v1/admin/nothing' })),
    ]);
    const ids = responses.map((r) => r.headers['x-request-id'] as string);
    expect(new Set(ids).size).toBe(responses.length);
    const bodyIds = responses.filter((r) => r.statusCode >= 400).map((r) => json(r).request_id);
    expect(new Set(bodyIds).size).toBe(bodyIds.length);
    // Generated trace ids differ too when the client sends none.
    expect(new Set(responses.map((r) => r.headers['x-cycles-trace-id'])).size).toBe(responses.length);
  });
});

describe('trace id selection (runtime digest §5.1)', () => {
  it('a valid traceparent is used (rule 1)', async () => {
    const t = await createTenant(h);
    const res = await reserveWith(t, { traceparent: TRACEPARENT });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.headers['x-cycles-trace-id']).toBe(TP_TRACE);
  });

  it('only a valid X-Cycles-Trace-Id: echoed as is (rule 2)', async () => {
    const t = await createTenant(h);
    const res = await reserveWith(t, { 'x-cycles-trace-id': FLAT });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.headers['x-cycles-trace-id']).toBe(FLAT);
  });

  it('both valid but different: traceparent wins', async () => {
    const t = await createTenant(h);
    const res = await reserveWith(t, { traceparent: TRACEPARENT, 'x-cycles-trace-id': FLAT });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.headers['x-cycles-trace-id']).toBe(TP_TRACE);
  });

  it.each([
    ['all-zero trace-id', `00-${ZERO}-00f067aa0ba902b7-01`],
    ['version ff', `ff-${TP_TRACE}-00f067aa0ba902b7-01`],
    ['all-zero span-id', `00-${TP_TRACE}-0000000000000000-01`],
    ['garbage', 'garbage'],
    ['uppercase hex', `00-${TP_TRACE.toUpperCase()}-00f067aa0ba902b7-01`],
    ['short trace-id', `00-${TP_TRACE.slice(1)}-00f067aa0ba902b7-01`],
    ['missing flags', `00-${TP_TRACE}-00f067aa0ba902b7`],
    ['empty', ''],
  ])('malformed traceparent (%s) counts as absent: the request succeeds and echoes X-Cycles-Trace-Id', async (_n, tp) => {
    const t = await createTenant(h);
    const res = await reserveWith(t, { traceparent: tp, 'x-cycles-trace-id': FLAT });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.headers['x-cycles-trace-id']).toBe(FLAT);
  });

  it.each([
    ['uppercase', FLAT.toUpperCase()],
    ['31 hex chars', FLAT.slice(1)],
    ['33 hex chars', `${FLAT}a`],
    ['all zeros', ZERO],
    ['non-hex', 'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz'],
  ])('malformed X-Cycles-Trace-Id (%s) alone: not rejected, a fresh id is generated (rule 3)', async (_n, flat) => {
    const t = await createTenant(h);
    const res = await reserveWith(t, { 'x-cycles-trace-id': flat });
    expect(res.statusCode, res.body).toBe(200);
    const echoed = res.headers['x-cycles-trace-id'] as string;
    expect(echoed).toMatch(TRACE);
    expect(echoed).not.toBe(ZERO);
    expect(echoed).not.toBe(flat);
    expect(echoed).not.toBe(flat.toLowerCase());
  });

  it('malformed traceparent and malformed X-Cycles-Trace-Id together: still 200 with a fresh id', async () => {
    const t = await createTenant(h);
    const res = await reserveWith(t, { traceparent: 'garbage', 'x-cycles-trace-id': 'nope' });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.headers['x-cycles-trace-id']).toMatch(TRACE);
  });

  it('errors carry the selected trace id in header and body (validation, auth, 409)', async () => {
    const t = await createTenant(h);
    const before = await t.ledger();
    const v = await t.post('/v1/reservations', { ...t.reserveBody(10), subject: { dimensions: { a: 'b' } } }, { traceparent: TRACEPARENT });
    expect(v.statusCode).toBe(400);
    expect(v.headers['x-cycles-trace-id']).toBe(TP_TRACE);
    expect(json(v).trace_id).toBe(TP_TRACE);
    const a = await h.runtime.inject({ method: 'POST', url: '/v1/reservations', headers: { 'x-cycles-trace-id': FLAT }, payload: t.reserveBody(10) });
    expect(a.statusCode).toBe(401);
    expect(json(a).trace_id).toBe(FLAT);
    expect(a.headers['x-cycles-trace-id']).toBe(FLAT);
    const c = await reserveWith(t, { traceparent: TRACEPARENT }, 10_000_000);
    expect(c.statusCode).toBe(409);
    expect(json(c).trace_id).toBe(TP_TRACE);
    expect(await t.ledger()).toEqual(before);
  });

  it('the governance plane follows the same precedence', async () => {
    const both = await h.admin.inject({ method: 'GET', url: '/v1/auth/introspect', headers: { ...ADMIN, traceparent: TRACEPARENT, 'x-cycles-trace-id': FLAT } });
    expect(both.statusCode).toBe(200);
    expect(both.headers['x-cycles-trace-id']).toBe(TP_TRACE);
    const flat = await h.admin.inject({ method: 'GET', url: '/v1/admin/tenants/nope-nope', headers: { ...ADMIN, traceparent: 'garbage', 'x-cycles-trace-id': FLAT } });
    expect(flat.statusCode).toBe(404);
    expect(flat.headers['x-cycles-trace-id']).toBe(FLAT);
    expect(json(flat).trace_id).toBe(FLAT);
  });
});

/** Value of one Prometheus sample (0 when absent). */
function sample(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const m = /^([^{\s]+)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const got: Record<string, string> = {};
    for (const kv of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) got[kv[1]!] = kv[2]!;
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return 0;
}

describe('operational endpoints', () => {
  async function scrape(app: FastifyInstance): Promise<string> {
    const res = await app.inject({ method: 'GET', url: '/actuator/prometheus', headers: ADMIN });
    expect(res.statusCode, res.body.slice(0, 200)).toBe(200);
    expect(String(res.headers['content-type'])).toContain('text/plain');
    return res.body;
  }

  it('/actuator/prometheus requires the admin key on the runtime and governance planes', async () => {
    const t = await createTenant(h);
    for (const app of [h.runtime, h.admin]) {
      const none = await app.inject({ method: 'GET', url: '/actuator/prometheus' });
      expect(none.statusCode).toBe(401);
      expect(json(none).error).toBe('UNAUTHORIZED');
      const wrong = await app.inject({ method: 'GET', url: '/actuator/prometheus', headers: { 'x-admin-api-key': 'wrong' } });
      expect(wrong.statusCode).toBe(401);
      const tenantKey = await app.inject({ method: 'GET', url: '/actuator/prometheus', headers: { 'x-cycles-api-key': t.key } });
      expect(tenantKey.statusCode).toBe(401);
      expect(tenantKey.body).not.toContain('cycles_http_requests_total');
    }
  });

  it('exposes request, decision and Redis script metrics that count traffic exactly', async () => {
    const t = await createTenant(h);
    const before = await scrape(h.runtime);
    const httpOk = (b: string) => sample(b, 'cycles_http_requests_total', { plane: 'runtime', operation: 'createReservation', status: '200' });
    const http409 = (b: string) => sample(b, 'cycles_http_requests_total', { plane: 'runtime', operation: 'createReservation', status: '409', outcome: 'BUDGET_EXCEEDED' });
    const dec = (b: string, operation: string, decision: string) => sample(b, 'cycles_reservation_decisions_total', { operation, decision });
    const script = (b: string, result: string) => sample(b, 'cycles_redis_script_duration_seconds_count', { script: 'reserve', result });

    expect((await t.reserve(10)).statusCode).toBe(200);
    expect((await t.reserve(20)).statusCode).toBe(200);
    expect((await t.reserve(10_000_000)).statusCode).toBe(409);
    expect((await t.reserve(5, { dry_run: true })).statusCode).toBe(200);
    const d = await t.post('/v1/decide', { idempotency_key: idem(), subject: { tenant: t.id, workspace: 'nobudget-x', agent: 'a' }, action: { kind: 'k', name: 'n' }, estimate: { unit: 'TOKENS', amount: 1 } });
    expect(d.statusCode, d.body).toBe(400); // UNIT_MISMATCH: budgets exist in USD_MICROCENTS only
    const d2 = await t.post('/v1/decide', { idempotency_key: idem(), subject: { tenant: t.id, workspace: 'prod' }, action: { kind: 'k', name: 'n' }, estimate: { unit: USD, amount: 1 } });
    expect(json(d2).decision).toBe('ALLOW');

    const after = await scrape(h.runtime);
    expect(after).toContain('# TYPE cycles_http_requests_total counter');
    expect(after).toContain('# TYPE cycles_reservation_decisions_total counter');
    expect(after).toContain('# TYPE cycles_redis_script_duration_seconds histogram');
    expect(httpOk(after) - httpOk(before)).toBe(3);
    expect(http409(after) - http409(before)).toBe(1);
    expect(dec(after, 'reserve', 'ALLOW') - dec(before, 'reserve', 'ALLOW')).toBe(2);
    expect(dec(after, 'reserve', 'DENY') - dec(before, 'reserve', 'DENY')).toBe(1);
    expect(dec(after, 'reserve_dry_run', 'ALLOW') - dec(before, 'reserve_dry_run', 'ALLOW')).toBe(1);
    expect(dec(after, 'decide', 'ALLOW') - dec(before, 'decide', 'ALLOW')).toBe(1);
    // Two live ALLOWs, the dry run and the decide are OK; the 409 and the unit mismatch are refusals.
    expect(script(after, 'ok') - script(before, 'ok')).toBe(4);
    expect(script(after, 'refused') - script(before, 'refused')).toBe(2);
    expect(after).toMatch(/cycles_redis_script_duration_seconds_bucket\{[^}]*script="reserve"[^}]*\} \d+/);

    // The governance plane serves the same metrics and counts its own requests.
    const adminText = await scrape(h.admin);
    expect(adminText).toContain('cycles_http_requests_total');
    expect(adminText).toContain('cycles_reservation_decisions_total');
    expect(adminText).toContain('cycles_redis_script_duration_seconds');
    expect(sample(adminText, 'cycles_http_requests_total', { plane: 'admin', operation: 'createTenant', status: '201' })).toBeGreaterThanOrEqual(1);
  });

  it('liveness, readiness and health are open on both planes', async () => {
    for (const app of [h.runtime, h.admin]) {
      const live = await app.inject({ method: 'GET', url: '/actuator/health/liveness' });
      expect(live.statusCode).toBe(200);
      expect(json(live)).toEqual({ status: 'UP' });
      const ready = await app.inject({ method: 'GET', url: '/actuator/health/readiness' });
      expect(ready.statusCode).toBe(200);
      expect(json(ready)).toEqual({ status: 'UP' });
      const health = await app.inject({ method: 'GET', url: '/actuator/health' });
      expect(health.statusCode).toBe(200);
      expect(json(health)).toEqual({ status: 'UP', components: { redis: { status: 'UP' } } });
    }
  });
});
