import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, USD, createTenant, idem, invariantHolds, json, startHarness, type Harness, type TestTenant } from './helpers.js';

/**
 * Request validation (runtime digest §2.0, §3.1, §3.3, §3.4, §3.11, checklist §9 B; admin digest
 * §2.1, §2.2, §2.4, §3.1): every malformed request is a 400 INVALID_REQUEST (never a 500) whose
 * message names the offending field, the body is exactly the error envelope, and nothing changes.
 */

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => h.close());

const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const MAX = Number.MAX_SAFE_INTEGER; // 9007199254740991

/** Asserts the exact error envelope (runtime digest §4.1, checklist A.4/A.10/A.11). */
function expectError(res: LightMyRequestResponse, status: number, code: string, ...needles: string[]): any {
  expect(res.statusCode, res.body).toBe(status);
  const body = json(res);
  expect(body.error, res.body).toBe(code);
  const keys = Object.keys(body).sort();
  if (keys.includes('details')) expect(keys).toEqual(['details', 'error', 'message', 'request_id', 'trace_id']);
  else expect(keys).toEqual(['error', 'message', 'request_id', 'trace_id']);
  expect(typeof body.message).toBe('string');
  expect(body.request_id).toBe(res.headers['x-request-id']);
  expect(body.trace_id).toBe(res.headers['x-cycles-trace-id']);
  expect(body.trace_id).toMatch(/^[0-9a-f]{32}$/);
  for (const n of needles) expect(body.message, `message should name ${n}`).toContain(n);
  return body;
}

function expectInvalid(res: LightMyRequestResponse, ...needles: string[]): any {
  return expectError(res, 400, 'INVALID_REQUEST', ...needles);
}

async function listAll(t: TestTenant, query = ''): Promise<any[]> {
  const res = await t.get(`/v1/reservations?limit=200${query}`);
  expect(res.statusCode, res.body).toBe(200);
  return json(res).reservations;
}

/** Runs a rejected request and proves the tenant's ledger and reservation list did not move. */
async function rejectedUnchanged(t: TestTenant, send: () => Promise<LightMyRequestResponse>): Promise<LightMyRequestResponse> {
  const before = await t.ledger();
  const listBefore = await listAll(t);
  const res = await send();
  expect(await t.ledger()).toEqual(before);
  expect((await listAll(t)).map((r) => [r.reservation_id, r.status, r.expires_at_ms])).toEqual(
    listBefore.map((r) => [r.reservation_id, r.status, r.expires_at_ms]),
  );
  return res;
}

function rawPost(t: TestTenant, url: string, payload: string, contentType = 'application/json') {
  return h.runtime.inject({ method: 'POST', url, headers: { 'x-cycles-api-key': t.key, 'content-type': contentType }, payload });
}

type Mutator = (body: any, t: TestTenant) => void;

const long = (n: number) => 'a'.repeat(n);
const dims = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`d${i}`, 'v']));

/** [case, mutation of a valid reserve body, substrings the message must contain]. */
const RESERVE_CASES: Array<[string, Mutator, string[]]> = [
  ['missing idempotency_key', (b) => delete b.idempotency_key, ['idempotency_key']],
  ['missing subject', (b) => delete b.subject, ['subject']],
  ['missing action', (b) => delete b.action, ['action']],
  ['missing estimate', (b) => delete b.estimate, ['estimate']],
  ['action without name', (b) => delete b.action.name, ['action', 'name']],
  ['estimate without unit', (b) => delete b.estimate.unit, ['estimate', 'unit']],
  ['unknown top-level field', (b) => (b.surprise = 1), ['surprise']],
  ['unknown field in subject', (b) => (b.subject.team = 'x'), ['subject', 'team']],
  ['unknown field in action', (b) => (b.action.model = 'x'), ['action', 'model']],
  ['unknown field in estimate', (b) => (b.estimate.currency = 'USD'), ['estimate', 'currency']],
  ['subject as a string', (b) => (b.subject = 'tenant'), ['subject']],
  ['subject.workspace as a number', (b) => (b.subject.workspace = 7), ['subject/workspace']],
  ['action.tags not an array', (b) => (b.action.tags = 'a,b'), ['action/tags']],
  ['estimate.amount as a string', (b) => (b.estimate.amount = '100'), ['estimate/amount']],
  ['estimate.amount negative', (b) => (b.estimate.amount = -1), ['estimate/amount']],
  ['estimate.amount non-integer', (b) => (b.estimate.amount = 1.5), ['estimate/amount']],
  ['estimate.amount 2^53', (b) => (b.estimate.amount = 9007199254740992), ['estimate/amount']],
  ['estimate.amount 1e30', (b) => (b.estimate.amount = 1e30), ['estimate/amount']],
  ['estimate.unit not in the enum', (b) => (b.estimate.unit = 'USD'), ['estimate/unit']],
  ['overage_policy not in the enum', (b) => (b.overage_policy = 'SOMETIMES'), ['overage_policy']],
  ['dry_run as a string', (b) => (b.dry_run = 'yes'), ['dry_run']],
  ['ttl_ms as a string', (b) => (b.ttl_ms = '60000'), ['ttl_ms']],
  ['ttl_ms 999', (b) => (b.ttl_ms = 999), ['ttl_ms']],
  ['ttl_ms 86400001', (b) => (b.ttl_ms = 86_400_001), ['ttl_ms']],
  ['grace_period_ms -1', (b) => (b.grace_period_ms = -1), ['grace_period_ms']],
  ['grace_period_ms 60001', (b) => (b.grace_period_ms = 60_001), ['grace_period_ms']],
  ['idempotency_key empty', (b) => (b.idempotency_key = ''), ['idempotency_key']],
  ['idempotency_key of 257 chars', (b) => (b.idempotency_key = long(257)), ['idempotency_key']],
  ['idempotency_key a number', (b) => (b.idempotency_key = 12345), ['idempotency_key']],
  ['subject.tenant of 129 chars', (b) => (b.subject.tenant = long(129)), ['subject/tenant']],
  ['subject.workspace of 129 chars', (b) => (b.subject.workspace = long(129)), ['subject/workspace']],
  ['subject.agent of 129 chars', (b) => (b.subject.agent = long(129)), ['subject/agent']],
  ['subject.toolset of 129 chars', (b) => (b.subject.toolset = long(129)), ['subject/toolset']],
  ['17 dimensions', (b) => (b.subject.dimensions = dims(17)), ['subject/dimensions']],
  ['dimension value of 257 chars', (b) => (b.subject.dimensions = { run_id: long(257) }), ['subject/dimensions']],
  ['action.kind of 65 chars', (b) => (b.action.kind = long(65)), ['action/kind']],
  ['action.name of 257 chars', (b) => (b.action.name = long(257)), ['action/name']],
  ['11 action.tags', (b) => (b.action.tags = Array.from({ length: 11 }, (_, i) => `t${i}`)), ['action/tags']],
  ['action.tag of 65 chars', (b) => (b.action.tags = [long(65)]), ['action/tags']],
  ['subject with only dimensions', (b) => (b.subject = { dimensions: { cost_center: 'x' } }), ['subject']],
  ['subject {}', (b) => (b.subject = {}), ['subject']],
  ["subject.workspace containing '/'", (b) => (b.subject.workspace = 'prod/evil'), ['subject/workspace']],
  ["subject.workspace containing ':'", (b) => (b.subject.workspace = 'workspace:prod'), ['subject/workspace']],
  ["subject.agent containing ':'", (b) => (b.subject.agent = 'a:b'), ['subject/agent']],
  ['subject.workspace empty string', (b) => (b.subject.workspace = ''), ['subject/workspace']],
  ['metadata not an object', (b) => (b.metadata = 'note'), ['metadata']],
];

describe('createReservation body validation → 400 INVALID_REQUEST naming the field, no ledger change', () => {
  it.each(RESERVE_CASES)('%s', async (_name, mutate, needles) => {
    const t = await createTenant(h);
    const body: any = t.reserveBody(100);
    mutate(body, t);
    const res = await rejectedUnchanged(t, () => t.post('/v1/reservations', body));
    expectInvalid(res, ...needles);
    expect(await listAll(t)).toEqual([]);
  });

  it('dry_run reserve and decide validate the same way', async () => {
    const t = await createTenant(h);
    const dry: any = t.reserveBody(100, { dry_run: true });
    dry.estimate.amount = -5;
    expectInvalid(await rejectedUnchanged(t, () => t.post('/v1/reservations', dry)), 'estimate/amount');
    const decide: any = t.reserveBody(100);
    decide.subject.dimensions = dims(17);
    expectInvalid(await rejectedUnchanged(t, () => t.post('/v1/decide', decide)), 'subject/dimensions');
    // DecisionRequest has no ttl_ms (runtime digest §2.7): an unknown field there.
    const decide2: any = t.reserveBody(100, { ttl_ms: 5000 });
    expectInvalid(await rejectedUnchanged(t, () => t.post('/v1/decide', decide2)), 'ttl_ms');
  });

  it('X-Idempotency-Key different from the body key → 400, nothing reserved', async () => {
    const t = await createTenant(h);
    const res = await rejectedUnchanged(t, () => t.post('/v1/reservations', t.reserveBody(100), { 'x-idempotency-key': 'k1-other' }));
    expectInvalid(res, 'X-Idempotency-Key header does not match idempotency_key in request body');
    expect(await listAll(t)).toEqual([]);
  });

  it('boundary values are accepted: ttl_ms 1000 and 86400000, grace 0 and 60000, 256-char key, 16 dimensions, 10 tags, 128-char values', async () => {
    const t = await createTenant(h);
    const ok = async (over: Record<string, unknown>, mutate?: Mutator) => {
      const body: any = t.reserveBody(10, over);
      mutate?.(body, t);
      const res = await t.post('/v1/reservations', body);
      expect(res.statusCode, res.body).toBe(200);
      return json(res);
    };
    await ok({ ttl_ms: 1000 });
    await ok({ ttl_ms: 86_400_000 });
    await ok({ grace_period_ms: 0 });
    await ok({ grace_period_ms: 60_000 });
    await ok({ idempotency_key: long(256) });
    await ok({}, (b) => (b.subject.dimensions = dims(16)));
    await ok({}, (b) => (b.action.tags = Array.from({ length: 10 }, (_, i) => `t${i}`)));
    await ok({}, (b) => (b.subject.agent = long(128)));
    await ok({}, (b) => (b.action.kind = long(64)));
    const b = await t.balance('workspace:prod');
    expect(b.reserved.amount).toBe(90);
    expect(invariantHolds(b)).toBe(true);
  });
});

describe('transport-level problems → 400 INVALID_REQUEST, never 500', () => {
  it('malformed JSON', async () => {
    const t = await createTenant(h);
    const res = await rejectedUnchanged(t, () => rawPost(t, '/v1/reservations', '{"idempotency_key": "k", "subject": {'));
    expectInvalid(res, 'JSON');
  });

  it('empty body with Content-Type application/json', async () => {
    const t = await createTenant(h);
    const res = await rejectedUnchanged(t, () => rawPost(t, '/v1/reservations', ''));
    expectInvalid(res);
  });

  it('no body and no Content-Type', async () => {
    const t = await createTenant(h);
    const res = await rejectedUnchanged(t, () => h.runtime.inject({ method: 'POST', url: '/v1/reservations', headers: { 'x-cycles-api-key': t.key } }));
    expectInvalid(res, 'body');
  });

  it('JSON array instead of an object', async () => {
    const t = await createTenant(h);
    const res = await rejectedUnchanged(t, () => rawPost(t, '/v1/reservations', '[1,2,3]'));
    expectInvalid(res, 'body');
  });

  it('wrong Content-Type (application/xml)', async () => {
    const t = await createTenant(h);
    const res = await rejectedUnchanged(t, () => rawPost(t, '/v1/reservations', JSON.stringify(t.reserveBody(100)), 'application/xml'));
    expectInvalid(res, 'application/json');
  });

  it('wrong Content-Type (text/plain) carrying valid JSON text', async () => {
    const t = await createTenant(h);
    const res = await rejectedUnchanged(t, () => rawPost(t, '/v1/reservations', JSON.stringify(t.reserveBody(100)), 'text/plain'));
    expectInvalid(res);
    expect(await listAll(t)).toEqual([]);
  });

  it('amounts above 2^53−1 written as raw JSON literals', async () => {
    const t = await createTenant(h);
    for (const literal of ['9007199254740992', '9007199254740993', '1e30', '99999999999999999999', '-0.5', '1.0e2.5']) {
      const raw = JSON.stringify(t.reserveBody(100)).replace('"amount":100', `"amount":${literal}`);
      const res = await rejectedUnchanged(t, () => rawPost(t, '/v1/reservations', raw));
      if (literal === '1.0e2.5') expectInvalid(res, 'JSON');
      else expectInvalid(res, 'estimate/amount');
    }
  });

  it('body larger than the 64 KiB limit', async () => {
    const t = await createTenant(h);
    const body = t.reserveBody(100, { metadata: { blob: 'x'.repeat(70_000) } });
    const res = await rejectedUnchanged(t, () => t.post('/v1/reservations', body));
    expectInvalid(res, 'limit');
    expect(await listAll(t)).toEqual([]);
  });

  it('body just under the limit is accepted', async () => {
    const t = await createTenant(h);
    const body = t.reserveBody(100, { metadata: { blob: 'x'.repeat(60_000) } });
    const res = await t.post('/v1/reservations', body);
    expect(res.statusCode, res.body).toBe(200);
  });
});

describe('commit / release / extend / events validation', () => {
  async function withReservation() {
    const t = await createTenant(h);
    const rid = await t.reserveOk(1000);
    return { t, rid };
  }

  /** The reservation is untouched: still ACTIVE, same expiry, ledger unchanged. */
  async function reservationUnchanged(t: TestTenant, rid: string, send: () => Promise<LightMyRequestResponse>) {
    const before = json(await t.get(`/v1/reservations/${rid}`));
    const res = await rejectedUnchanged(t, send);
    const after = json(await t.get(`/v1/reservations/${rid}`));
    expect(after).toEqual(before);
    expect(after.status).toBe('ACTIVE');
    return res;
  }

  const COMMIT_CASES: Array<[string, Record<string, unknown>, string[]]> = [
    ['missing actual', { idempotency_key: 'c1' }, ['actual']],
    ['negative actual', { idempotency_key: 'c1', actual: { unit: USD, amount: -1 } }, ['actual/amount']],
    ['non-integer actual', { idempotency_key: 'c1', actual: { unit: USD, amount: 10.25 } }, ['actual/amount']],
    ['string actual', { idempotency_key: 'c1', actual: { unit: USD, amount: '10' } }, ['actual/amount']],
    ['actual above 2^53−1', { idempotency_key: 'c1', actual: { unit: USD, amount: 9007199254740992 } }, ['actual/amount']],
    ['actual 1e30', { idempotency_key: 'c1', actual: { unit: USD, amount: 1e30 } }, ['actual/amount']],
    ['unknown field in actual', { idempotency_key: 'c1', actual: { unit: USD, amount: 1, x: 1 } }, ['actual', 'x']],
    ['unknown top-level field', { idempotency_key: 'c1', actual: { unit: USD, amount: 1 }, overage_policy: 'REJECT' }, ['overage_policy']],
    ['unknown field in metrics', { idempotency_key: 'c1', actual: { unit: USD, amount: 1 }, metrics: { tokens: 5 } }, ['metrics', 'tokens']],
    ['negative metrics.tokens_input', { idempotency_key: 'c1', actual: { unit: USD, amount: 1 }, metrics: { tokens_input: -1 } }, ['metrics/tokens_input']],
    ['metrics.model_version of 129 chars', { idempotency_key: 'c1', actual: { unit: USD, amount: 1 }, metrics: { model_version: long(129) } }, ['metrics/model_version']],
    ['idempotency_key of 257 chars', { idempotency_key: long(257), actual: { unit: USD, amount: 1 } }, ['idempotency_key']],
  ];

  it.each(COMMIT_CASES)('commit: %s → 400', async (_n, body, needles) => {
    const { t, rid } = await withReservation();
    expectInvalid(await reservationUnchanged(t, rid, () => t.post(`/v1/reservations/${rid}/commit`, body)), ...needles);
  });

  it('commit with a reservation_id longer than 128 chars → 400 naming reservation_id (runtime digest §2.2, §2.5)', async () => {
    const t = await createTenant(h);
    const res = await rejectedUnchanged(t, () => t.post(`/v1/reservations/${'r'.repeat(129)}/commit`, { idempotency_key: 'c', actual: { unit: USD, amount: 1 } }));
    expectInvalid(res, 'reservation_id');
    expectInvalid(await t.get(`/v1/reservations/${'r'.repeat(129)}`), 'reservation_id');
  });

  it('a well-formed but unknown reservation_id of 101..128 chars → 404 NOT_FOUND envelope (ids are 1..128 chars)', async () => {
    const t = await createTenant(h);
    for (const n of [101, 128]) {
      const id = 'r'.repeat(n);
      expectError(await t.get(`/v1/reservations/${id}`), 404, 'NOT_FOUND');
      const res = await rejectedUnchanged(t, () => t.post(`/v1/reservations/${id}/release`, { idempotency_key: 'r' }));
      expectError(res, 404, 'NOT_FOUND');
    }
  });

  const RELEASE_CASES: Array<[string, Record<string, unknown>, string[]]> = [
    ['reason of 257 chars', { idempotency_key: 'r1', reason: long(257) }, ['reason']],
    ['reason as a number', { idempotency_key: 'r1', reason: 5 }, ['reason']],
    ['missing idempotency_key', { reason: 'x' }, ['idempotency_key']],
    ['unknown field', { idempotency_key: 'r1', force: true }, ['force']],
  ];

  it.each(RELEASE_CASES)('release: %s → 400', async (_n, body, needles) => {
    const { t, rid } = await withReservation();
    expectInvalid(await reservationUnchanged(t, rid, () => t.post(`/v1/reservations/${rid}/release`, body)), ...needles);
  });

  it('release with a 256-char reason is accepted', async () => {
    const { t, rid } = await withReservation();
    const res = await t.release(rid, { reason: long(256) });
    expect(res.statusCode, res.body).toBe(200);
  });

  const EXTEND_CASES: Array<[string, Record<string, unknown>, string[]]> = [
    ['extend_by_ms missing', { idempotency_key: 'e1' }, ['extend_by_ms']],
    ['extend_by_ms 0', { idempotency_key: 'e1', extend_by_ms: 0 }, ['extend_by_ms']],
    ['extend_by_ms negative', { idempotency_key: 'e1', extend_by_ms: -1000 }, ['extend_by_ms']],
    ['extend_by_ms 86400001', { idempotency_key: 'e1', extend_by_ms: 86_400_001 }, ['extend_by_ms']],
    ['extend_by_ms non-integer', { idempotency_key: 'e1', extend_by_ms: 1000.5 }, ['extend_by_ms']],
    ['extend_by_ms as a string', { idempotency_key: 'e1', extend_by_ms: '1000' }, ['extend_by_ms']],
    ['unknown field', { idempotency_key: 'e1', extend_by_ms: 1000, ttl_ms: 5 }, ['ttl_ms']],
  ];

  it.each(EXTEND_CASES)('extend: %s → 400', async (_n, body, needles) => {
    const { t, rid } = await withReservation();
    expectInvalid(await reservationUnchanged(t, rid, () => t.post(`/v1/reservations/${rid}/extend`, body)), ...needles);
  });

  it('extend_by_ms bounds 1 and 86400000 are accepted', async () => {
    const { t, rid } = await withReservation();
    const before = json(await t.get(`/v1/reservations/${rid}`)).expires_at_ms;
    const a = await t.post(`/v1/reservations/${rid}/extend`, { idempotency_key: idem('e'), extend_by_ms: 1 });
    expect(a.statusCode, a.body).toBe(200);
    expect(json(a).expires_at_ms).toBe(before + 1);
    const b = await t.post(`/v1/reservations/${rid}/extend`, { idempotency_key: idem('e'), extend_by_ms: 86_400_000 });
    expect(b.statusCode, b.body).toBe(200);
  });

  const EVENT_CASES: Array<[string, Mutator, string[]]> = [
    ['actual 1e30', (b) => (b.actual.amount = 1e30), ['actual/amount']],
    ['negative actual', (b) => (b.actual.amount = -3), ['actual/amount']],
    ['negative client_time_ms', (b) => (b.client_time_ms = -1), ['client_time_ms']],
    ['unknown field in subject', (b) => (b.subject.region = 'eu'), ['subject', 'region']],
    ['subject value with /', (b) => (b.subject.workspace = 'a/b'), ['subject/workspace']],
    ['estimate instead of actual', (b) => ((b.estimate = b.actual), delete b.actual), ['actual']],
  ];

  it.each(EVENT_CASES)('events: %s → 400', async (_n, mutate, needles) => {
    const t = await createTenant(h);
    const body: any = {
      idempotency_key: idem('ev'),
      subject: { tenant: t.id, workspace: 'prod' },
      action: { kind: 'tool.search', name: 'web' },
      actual: { unit: USD, amount: 50 },
    };
    mutate(body, t);
    expectInvalid(await rejectedUnchanged(t, () => t.post('/v1/events', body)), ...needles);
  });

  it('query parameters: bad status, limit out of range, bad sort_by on GET /v1/reservations → 400 naming the parameter', async () => {
    const t = await createTenant(h);
    expectInvalid(await t.get('/v1/reservations?status=DONE'), 'status');
    expectInvalid(await t.get('/v1/reservations?limit=0'), 'limit');
    expectInvalid(await t.get('/v1/reservations?limit=201'), 'limit');
    expectInvalid(await t.get('/v1/reservations?sort_by=cost'), 'sort_by');
    expectInvalid(await t.get('/v1/reservations?from=yesterday'), 'from');
  });

  it('GET /v1/balances without any subject filter → 400; limit outside 1..200 → 400 naming limit', async () => {
    const t = await createTenant(h);
    expectInvalid(await t.get('/v1/balances'));
    expectInvalid(await t.get(`/v1/balances?tenant=${t.id}&limit=0`), 'limit');
    expectInvalid(await t.get(`/v1/balances?tenant=${t.id}&limit=201`), 'limit');
    expectInvalid(await t.get(`/v1/balances?tenant=${t.id}&limit=ten`), 'limit');
  });

  it('commit / release / extend with X-Idempotency-Key ≠ body key → 400, reservation untouched', async () => {
    const { t, rid } = await withReservation();
    const msg = 'X-Idempotency-Key header does not match idempotency_key in request body';
    expectInvalid(await reservationUnchanged(t, rid, () => t.post(`/v1/reservations/${rid}/commit`, { idempotency_key: 'k1', actual: { unit: USD, amount: 5 } }, { 'x-idempotency-key': 'k2' })), msg);
    expectInvalid(await reservationUnchanged(t, rid, () => t.post(`/v1/reservations/${rid}/release`, { idempotency_key: 'k1' }, { 'x-idempotency-key': 'k2' })), msg);
    expectInvalid(await reservationUnchanged(t, rid, () => t.post(`/v1/reservations/${rid}/extend`, { idempotency_key: 'k1', extend_by_ms: 10 }, { 'x-idempotency-key': 'k2' })), msg);
  });

  it('Content-Type application/json; charset=utf-8 is accepted', async () => {
    const t = await createTenant(h);
    const res = await rawPost(t, '/v1/reservations', JSON.stringify(t.reserveBody(100)), 'application/json; charset=utf-8');
    expect(res.statusCode, res.body).toBe(200);
  });
});

describe('admin bodies', () => {
  const post = (url: string, payload: unknown) => h.admin.inject({ method: 'POST', url, headers: ADMIN, payload: payload as object });

  it.each([
    ['uppercase', 'Acme-Corp'],
    ['underscore', 'acme_corp'],
    ['too short', 'ab'],
    ['too long', 'a'.repeat(65)],
    ['slash', 'acme/corp'],
  ])('tenant_id %s → 400 naming tenant_id, tenant not created', async (_n, id) => {
    const res = await post('/v1/admin/tenants', { tenant_id: id, name: 'x' });
    expectInvalid(res, 'tenant_id');
    const get = await h.admin.inject({ method: 'GET', url: `/v1/admin/tenants/${encodeURIComponent(id)}`, headers: ADMIN });
    // Not created: 404, or 400 when the id cannot even be a path parameter (> 64 chars).
    expect(get.statusCode).toBe(id.length > 64 ? 400 : 404);
  });

  it('tenant create with an unknown field or a bad default TTL → 400', async () => {
    const id = `v-${idem('x').slice(2, 12)}`;
    expectInvalid(await post('/v1/admin/tenants', { tenant_id: id, name: 'x', observe_mode: 'OBSERVE' }), 'observe_mode');
    expectInvalid(await post('/v1/admin/tenants', { tenant_id: id, name: 'x', default_reservation_ttl_ms: 999 }), 'default_reservation_ttl_ms');
    expectInvalid(await post('/v1/admin/tenants', { tenant_id: id, name: 'x', max_reservation_extensions: -1 }), 'max_reservation_extensions');
    expect((await h.admin.inject({ method: 'GET', url: `/v1/admin/tenants/${id}`, headers: ADMIN })).statusCode).toBe(404);
  });

  it('API key with an unknown permission → 400 "Unrecognized permission: <value>"', async () => {
    const t = await createTenant(h);
    const before = await t.ledger();
    const res = await post('/v1/admin/api-keys', { tenant_id: t.id, name: 'k', permissions: ['reservations:create', 'reservations:destroy'] });
    expectInvalid(res, 'Unrecognized permission: reservations:destroy');
    expect(await t.ledger()).toEqual(before);
  });

  it('tenant create with a blank name → 400 naming name; API key with an unparseable expires_at → 400 naming expires_at', async () => {
    const id = `v-${idem('x').slice(2, 12)}`;
    expectInvalid(await post('/v1/admin/tenants', { tenant_id: id, name: '   ' }), 'name');
    expectInvalid(await post('/v1/admin/tenants', { tenant_id: id, name: '' }), 'name');
    expect((await h.admin.inject({ method: 'GET', url: `/v1/admin/tenants/${id}`, headers: ADMIN })).statusCode).toBe(404);
    const t = await createTenant(h);
    expectInvalid(await post('/v1/admin/api-keys', { tenant_id: t.id, name: 'k', expires_at: 'next tuesday' }), 'expires_at');
  });

  it('budget PATCH with overdraft_limit above 2^53−1 or 1e30 → 400, ledger unchanged', async () => {
    const t = await createTenant(h);
    const before = await t.ledger();
    for (const amount of [9007199254740992, 1e30, -1]) {
      const res = await h.admin.inject({
        method: 'PATCH',
        url: `/v1/admin/budgets?scope=${encodeURIComponent(t.scope())}&unit=${USD}`,
        headers: ADMIN,
        payload: { overdraft_limit: { unit: USD, amount } },
      });
      expectInvalid(res, 'overdraft_limit');
    }
    expect(await t.ledger()).toEqual(before);
  });

  it('API key with an unknown field → 400', async () => {
    const t = await createTenant(h);
    expectInvalid(await post('/v1/admin/api-keys', { tenant_id: t.id, name: 'k', status: 'ACTIVE' }), 'status');
  });

  it('budget with allocated unit ≠ unit → 400 UNIT_MISMATCH, no budget created', async () => {
    const t = await createTenant(h);
    const before = await t.ledger();
    const scope = t.scope('workspace:units');
    const res = await post('/v1/admin/budgets', { tenant_id: t.id, scope, unit: USD, allocated: { unit: 'TOKENS', amount: 10 } });
    expectError(res, 400, 'UNIT_MISMATCH');
    const res2 = await post('/v1/admin/budgets', {
      tenant_id: t.id, scope, unit: USD, allocated: { unit: USD, amount: 10 }, overdraft_limit: { unit: 'CREDITS', amount: 5 },
    });
    expectError(res2, 400, 'UNIT_MISMATCH');
    expect(await t.ledger()).toEqual(before);
    const look = await h.admin.inject({ method: 'GET', url: `/v1/admin/budgets/lookup?scope=${encodeURIComponent(scope)}&unit=${USD}`, headers: ADMIN });
    expectError(look, 404, 'BUDGET_NOT_FOUND');
  });

  it.each([
    ['negative allocated', (b: any) => (b.allocated.amount = -1), 'allocated/amount'],
    ['allocated above 2^53−1', (b: any) => (b.allocated.amount = 9007199254740992), 'allocated/amount'],
    ['allocated 1e30', (b: any) => (b.allocated.amount = 1e30), 'allocated/amount'],
    ['unit not in the enum', (b: any) => (b.unit = 'EUR'), 'unit'],
    ['unknown field', (b: any) => (b.priority = 1), 'priority'],
  ])('budget create: %s → 400', async (_n, mutate, needle) => {
    const t = await createTenant(h);
    const before = await t.ledger();
    const body: any = { tenant_id: t.id, scope: t.scope('workspace:b'), unit: USD, allocated: { unit: USD, amount: 10 } };
    mutate(body);
    expectInvalid(await post('/v1/admin/budgets', body), needle);
    expect(await t.ledger()).toEqual(before);
  });

  it('budget scope grammar violations → 400 naming the scope', async () => {
    const t = await createTenant(h);
    const before = await t.ledger();
    for (const scope of [`workspace:x`, `tenant:${t.id}/agent:a/workspace:w`, `tenant:${t.id}/agent:*`, `tenant:${t.id}/workspace:`]) {
      expectInvalid(await post('/v1/admin/budgets', { tenant_id: t.id, scope, unit: USD, allocated: { unit: USD, amount: 10 } }), 'scope');
    }
    expect(await t.ledger()).toEqual(before);
  });

  it.each([
    ['unknown operation', { operation: 'GIFT', amount: { unit: USD, amount: 5 } }, 'operation'],
    ['negative amount', { operation: 'CREDIT', amount: { unit: USD, amount: -5 } }, 'amount/amount'],
    ['amount above 2^53−1', { operation: 'CREDIT', amount: { unit: USD, amount: 9007199254740992 } }, 'amount/amount'],
    ['reason of 513 chars', { operation: 'CREDIT', amount: { unit: USD, amount: 5 }, reason: long(513) }, 'reason'],
    ['idempotency_key of 257 chars', { operation: 'CREDIT', amount: { unit: USD, amount: 5 }, idempotency_key: long(257) }, 'idempotency_key'],
    ['spent with CREDIT', { operation: 'CREDIT', amount: { unit: USD, amount: 5 }, spent: { unit: USD, amount: 1 } }, 'spent'],
  ])('fund: %s → 400, ledger unchanged', async (_n, body, needle) => {
    const t = await createTenant(h);
    const before = await t.ledger();
    const res = await post(`/v1/admin/budgets/fund?scope=${encodeURIComponent(t.scope())}&unit=${USD}&tenant_id=${t.id}`, body);
    expectInvalid(res, needle);
    expect(await t.ledger()).toEqual(before);
  });

  it('fund with amount unit ≠ query unit → 400 UNIT_MISMATCH, ledger unchanged', async () => {
    const t = await createTenant(h);
    const before = await t.ledger();
    const res = await post(`/v1/admin/budgets/fund?scope=${encodeURIComponent(t.scope())}&unit=${USD}&tenant_id=${t.id}`, {
      operation: 'CREDIT', amount: { unit: 'TOKENS', amount: 5 },
    });
    expectError(res, 400, 'UNIT_MISMATCH');
    expect(await t.ledger()).toEqual(before);
  });

  it('malformed JSON on the admin plane → 400', async () => {
    const res = await h.admin.inject({ method: 'POST', url: '/v1/admin/tenants', headers: { ...ADMIN, 'content-type': 'application/json' }, payload: '{"tenant_id":' });
    expectInvalid(res, 'JSON');
  });
});

describe('integer bounds (2^53−1)', () => {
  /** JSON number tokens in exponent or fractional form anywhere in a raw body. */
  const EXPONENT = /[:,[]\s*-?\d+(\.\d+)?[eE][+-]?\d+/;

  it('a budget allocated at 2^53−1 works end to end and stays exact', async () => {
    const t = await createTenant(h, { budgets: [['', MAX]] });
    const look = await h.admin.inject({ method: 'GET', url: `/v1/admin/budgets/lookup?scope=${encodeURIComponent(t.scope())}&unit=${USD}`, headers: ADMIN });
    expect(look.statusCode, look.body).toBe(200);
    expect(look.body).toContain('"amount":9007199254740991');
    expect(json(look).allocated).toEqual({ unit: USD, amount: MAX });
    expect(json(look).remaining).toEqual({ unit: USD, amount: MAX });

    const rid = await t.reserveOk(MAX - 1, { ws: 'any' });
    let b = await t.balance();
    expect(b.reserved.amount).toBe(MAX - 1);
    expect(b.remaining.amount).toBe(1);
    expect(invariantHolds(b)).toBe(true);
    const got = await t.get(`/v1/reservations/${rid}`);
    expect(got.body).toContain('"amount":9007199254740990');
    const c = await t.commit(rid, MAX - 1);
    expect(c.statusCode, c.body).toBe(200);
    expect(json(c).charged).toEqual({ unit: USD, amount: MAX - 1 });
    b = await t.balance();
    expect([b.allocated.amount, b.spent.amount, b.reserved.amount, b.remaining.amount]).toEqual([MAX, MAX - 1, 0, 1]);
    const raw = await t.get(`/v1/balances?tenant=${t.id}`);
    expect(raw.body).toContain('"amount":9007199254740991');
    expect(raw.body).toContain('"amount":9007199254740990');
    expect(raw.body).not.toMatch(EXPONENT);
  });

  it('CREDIT that would push allocated past 2^53−1 → 400, ledger unchanged', async () => {
    const t = await createTenant(h, { budgets: [['', MAX - 10]] });
    const before = await t.ledger();
    const url = `/v1/admin/budgets/fund?scope=${encodeURIComponent(t.scope())}&unit=${USD}&tenant_id=${t.id}`;
    const res = await h.admin.inject({ method: 'POST', url, headers: ADMIN, payload: { operation: 'CREDIT', amount: { unit: USD, amount: 11 } } });
    expectInvalid(res);
    expect(await t.ledger()).toEqual(before);
    // Exactly reaching the bound is fine.
    const ok = await h.admin.inject({ method: 'POST', url, headers: ADMIN, payload: { operation: 'CREDIT', amount: { unit: USD, amount: 10 } } });
    expect(ok.statusCode, ok.body).toBe(200);
    expect(json(ok).new_allocated).toEqual({ unit: USD, amount: MAX });
    expect(ok.body).toContain('"amount":9007199254740991');
    expect((await t.balance()).allocated.amount).toBe(MAX);
    // ... and one more unit is refused.
    const again = await h.admin.inject({ method: 'POST', url, headers: ADMIN, payload: { operation: 'CREDIT', amount: { unit: USD, amount: 1 } } });
    expectInvalid(again);
    expect((await t.balance()).allocated.amount).toBe(MAX);
  });

  it('large amounts such as 123456789012345 are never rendered in exponent form', async () => {
    const big = 123_456_789_012_345;
    const t = await createTenant(h, { budgets: [['', big * 4], ['workspace:prod', big * 3]] });
    const r = await t.post('/v1/reservations', t.reserveBody(big));
    expect(r.statusCode, r.body).toBe(200);
    const rid = json(r).reservation_id;
    const bodies: string[] = [r.body];
    bodies.push((await t.get(`/v1/reservations/${rid}`)).body);
    bodies.push((await t.get(`/v1/reservations?limit=10`)).body);
    const c = await t.post(`/v1/reservations/${rid}/commit`, { idempotency_key: idem('c'), actual: { unit: USD, amount: big - 1 } });
    expect(c.statusCode, c.body).toBe(200);
    bodies.push(c.body);
    bodies.push((await t.get(`/v1/reservations/${rid}`)).body);
    bodies.push((await t.get(`/v1/balances?tenant=${t.id}`)).body);
    const ev = await t.post('/v1/events', {
      idempotency_key: idem('ev'), subject: { tenant: t.id, workspace: 'prod' }, action: { kind: 'k', name: 'n' }, actual: { unit: USD, amount: big },
    });
    expect(ev.statusCode, ev.body).toBe(201);
    bodies.push((await t.get(`/v1/balances?tenant=${t.id}`)).body);
    const fund = await h.admin.inject({
      method: 'POST',
      url: `/v1/admin/budgets/fund?scope=${encodeURIComponent(t.scope())}&unit=${USD}&tenant_id=${t.id}`,
      headers: ADMIN,
      payload: { operation: 'CREDIT', amount: { unit: USD, amount: big } },
    });
    expect(fund.statusCode, fund.body).toBe(200);
    bodies.push(fund.body);
    bodies.push((await h.admin.inject({ method: 'GET', url: `/v1/admin/budgets/lookup?scope=${encodeURIComponent(t.scope())}&unit=${USD}`, headers: ADMIN })).body);
    for (const body of bodies) expect(body).not.toMatch(EXPONENT);
    expect(bodies[0]).toContain('"amount":123456789012345');
    expect(bodies[3]).toContain('"amount":123456789012344');
    expect(bodies[5]).toContain(`"amount":${big * 3 - (big - 1)}`);
    // Exact arithmetic on the tenant scope: allocated 4b+b, spent (b−1)+b.
    const tb = await t.balance();
    expect(tb.allocated.amount).toBe(big * 5);
    expect(tb.spent.amount).toBe(big * 2 - 1);
    expect(tb.remaining.amount).toBe(big * 5 - (big * 2 - 1));
    expect(invariantHolds(tb)).toBe(true);
  });
});
