import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import type { SystemOptions } from '../src/system.js';
import { ADMIN_KEY, json, startHarness, type Harness } from './helpers.js';

/**
 * OpenAPI document and Swagger UI on the runtime and admin ports, and CORS for the operator
 * dashboard on the admin port (ADR 0016; admin digest §0.2, events-ops digest §7.3).
 */

type Apps = Harness;

type Extra = Pick<SystemOptions, 'swaggerEnabled' | 'docsPublic' | 'dashboardCorsOrigins'>;

function start(extra: Extra = {}): Promise<Apps> {
  return startHarness({ keyPrefix: 'cydocs', events: extra });
}

const ADMIN = { 'x-admin-api-key': ADMIN_KEY };
const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });
const DASHBOARD = 'http://localhost:5173';

function expectEnvelope(res: LightMyRequestResponse, status: number, code: string): any {
  expect(res.statusCode, res.body).toBe(status);
  const body = json(res);
  expect(body.error, res.body).toBe(code);
  expect(Object.keys(body).sort()).toEqual(['error', 'message', 'request_id', 'trace_id']);
  expect(body.request_id).toBe(res.headers['x-request-id']);
  expect(body.trace_id).toBe(res.headers['x-cycles-trace-id']);
  return body;
}

function operations(doc: any): Array<{ path: string; method: string; op: any }> {
  return Object.entries<any>(doc.paths).flatMap(([path, item]) =>
    Object.entries<any>(item).map(([method, op]) => ({ path, method, op })));
}

let apps: Apps;
beforeAll(async () => {
  apps = await start();
});
afterAll(async () => apps.close());

describe('docs behind the admin key (default)', () => {
  it('/openapi.json and /docs without credentials → 401 with a Basic challenge, on both planes', async () => {
    for (const [plane, app] of [['runtime', apps.runtime], ['admin', apps.admin]] as const) {
      for (const url of ['/openapi.json', '/docs', '/docs/', '/docs/json', '/docs/static/swagger-ui.css']) {
        const res = await app.inject({ method: 'GET', url });
        const body = expectEnvelope(res, 401, 'UNAUTHORIZED');
        expect(res.headers['www-authenticate'], `${plane} ${url}`).toBe('Basic realm="cycles"');
        expect(body.message).toBe('Missing X-Admin-API-Key header');
      }
    }
  });

  it('a wrong key, as header or as Basic password, → 401 with the challenge again', async () => {
    for (const headers of [{ 'x-admin-api-key': 'wrong' }, basic('ops', 'wrong'), basic('', 'wrong')]) {
      const res = await apps.admin.inject({ method: 'GET', url: '/openapi.json', headers });
      expectEnvelope(res, 401, 'UNAUTHORIZED');
      expect(json(res).message).toBe('Invalid admin API key');
      expect(res.headers['www-authenticate']).toBe('Basic realm="cycles"');
    }
    // Basic credentials with an empty password, or another scheme, count as no credentials.
    for (const headers of [basic('ops', ''), { authorization: `Bearer ${ADMIN_KEY}` }, { authorization: 'Basic !!!' }]) {
      const res = await apps.runtime.inject({ method: 'GET', url: '/docs', headers });
      expectEnvelope(res, 401, 'UNAUTHORIZED');
      expect(json(res).message).toBe('Missing X-Admin-API-Key header');
    }
  });

  it('the admin key as X-Admin-API-Key or as the Basic password (any user name) opens every docs path', async () => {
    for (const app of [apps.runtime, apps.admin]) {
      for (const headers of [ADMIN, basic('anyone', ADMIN_KEY), basic('', ADMIN_KEY)]) {
        const doc = await app.inject({ method: 'GET', url: '/openapi.json', headers });
        expect(doc.statusCode, doc.body).toBe(200);
        expect(doc.headers['content-type']).toMatch(/^application\/json/);
        expect(json(doc).openapi).toBe('3.0.3');
        const ui = await app.inject({ method: 'GET', url: '/docs', headers });
        expect(ui.statusCode).toBe(200);
        expect(ui.headers['content-type']).toMatch(/^text\/html/);
        expect(ui.body).toContain('swagger-ui');
        const uiDoc = await app.inject({ method: 'GET', url: '/docs/json', headers });
        expect(json(uiDoc)).toEqual(json(doc));
        const css = await app.inject({ method: 'GET', url: '/docs/static/swagger-ui.css', headers });
        expect(css.statusCode).toBe(200);
        expect(css.headers['content-type']).toMatch(/^text\/css/);
      }
    }
  });

  it('a Basic password does not open any other route (it is accepted on the docs paths only)', async () => {
    expectEnvelope(await apps.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: basic('ops', ADMIN_KEY) }), 401, 'UNAUTHORIZED');
    expectEnvelope(await apps.runtime.inject({ method: 'GET', url: '/actuator/prometheus', headers: basic('ops', ADMIN_KEY) }), 401, 'UNAUTHORIZED');
  });

  it('runtime document: the protocol routes with their operationIds, body schemas and security; no docs routes', async () => {
    const doc = json(await apps.runtime.inject({ method: 'GET', url: '/openapi.json', headers: ADMIN }));
    expect(doc.info.version).toBe('0.1.25');
    expect(Object.keys(doc.components.securitySchemes).sort()).toEqual(['AdminKeyAuth', 'ApiKeyAuth']);
    expect(doc.components.securitySchemes.ApiKeyAuth).toMatchObject({ type: 'apiKey', in: 'header', name: 'X-Cycles-API-Key' });
    const ops = operations(doc);
    const byId = new Map(ops.map((o) => [o.op.operationId, o]));
    for (const [id, method, path] of [
      ['createReservation', 'post', '/v1/reservations'],
      ['commitReservation', 'post', '/v1/reservations/{reservation_id}/commit'],
      ['releaseReservation', 'post', '/v1/reservations/{reservation_id}/release'],
      ['extendReservation', 'post', '/v1/reservations/{reservation_id}/extend'],
      ['getReservation', 'get', '/v1/reservations/{reservation_id}'],
      ['listReservations', 'get', '/v1/reservations'],
      ['decide', 'post', '/v1/decide'],
      ['getBalances', 'get', '/v1/balances'],
      ['createEvent', 'post', '/v1/events'],
    ] as const) {
      expect(byId.get(id), id).toMatchObject({ method, path });
    }
    const reserve = byId.get('createReservation')!.op;
    const body = reserve.requestBody.content['application/json'].schema;
    expect(body.required).toEqual(expect.arrayContaining(['idempotency_key', 'subject', 'action', 'estimate']));
    expect(body.additionalProperties).toBe(false);
    expect(reserve.security).toEqual([{ ApiKeyAuth: [] }]);
    expect(byId.get('releaseReservation')!.op.security).toEqual([{ ApiKeyAuth: [] }, { AdminKeyAuth: [] }]);
    expect(byId.get('liveness')!.op.security).toEqual([]);
    expect(byId.get('prometheus')!.op.security).toEqual([{ AdminKeyAuth: [] }]);
    expect(byId.get('getReservation')!.op.parameters).toEqual(
      expect.arrayContaining([expect.objectContaining({ in: 'path', name: 'reservation_id', required: true })]),
    );
    expectNoDocsRoutes(doc);
  });

  it('admin document: governance routes, admin-key security, unique operationIds; no docs or OPTIONS routes', async () => {
    const doc = json(await apps.admin.inject({ method: 'GET', url: '/openapi.json', headers: ADMIN }));
    const ops = operations(doc);
    const byId = new Map(ops.map((o) => [o.op.operationId, o]));
    expect(byId.get('createTenant')).toMatchObject({ method: 'post', path: '/v1/admin/tenants' });
    expect(byId.get('createTenant')!.op.security).toEqual([{ AdminKeyAuth: [] }]);
    expect(byId.get('listBudgets')).toMatchObject({ method: 'get', path: '/v1/admin/budgets' });
    expect(byId.get('listBudgets')!.op.security).toEqual([{ ApiKeyAuth: [] }, { AdminKeyAuth: [] }]);
    expect(byId.get('fundBudget')!.op.parameters).toEqual(
      expect.arrayContaining([expect.objectContaining({ in: 'query', name: 'scope', required: true })]),
    );
    expect(ops.length).toBeGreaterThan(20);
    expect(ops.every((o) => o.method !== 'options' && o.method !== 'head')).toBe(true);
    expectNoDocsRoutes(doc);
  });

  it('docs paths keep the 404/405 handling and the error envelope', async () => {
    const wrongMethod = await apps.admin.inject({ method: 'POST', url: '/openapi.json', headers: ADMIN });
    expectEnvelope(wrongMethod, 405, 'INVALID_REQUEST');
    expect(wrongMethod.headers.allow).toBe('GET, HEAD');
    expectEnvelope(await apps.runtime.inject({ method: 'DELETE', url: '/docs', headers: ADMIN }), 405, 'INVALID_REQUEST');
    // A missing static file of the UI is a 404, not a 405 for a method the path does serve.
    expectEnvelope(await apps.admin.inject({ method: 'GET', url: '/docs/static/no-such-file.js', headers: ADMIN }), 404, 'NOT_FOUND');
    expectEnvelope(await apps.admin.inject({ method: 'GET', url: '/openapi.yaml', headers: ADMIN }), 404, 'NOT_FOUND');
    // The rest of the planes is unchanged.
    const put = await apps.admin.inject({ method: 'PUT', url: '/v1/admin/tenants', headers: ADMIN });
    expectEnvelope(put, 405, 'INVALID_REQUEST');
    expect(put.headers.allow).toBe('GET, HEAD, POST');
    expectEnvelope(await apps.runtime.inject({ method: 'GET', url: '/v1/nope' }), 404, 'NOT_FOUND');
  });
});

function expectNoDocsRoutes(doc: any): void {
  const paths = Object.keys(doc.paths);
  expect(paths.filter((p) => p === '/openapi.json' || p === '/docs' || p.startsWith('/docs/') || p === '*' || p === '/*')).toEqual([]);
  const ids = operations(doc).map((o) => o.op.operationId);
  expect(ids.every((id) => typeof id === 'string')).toBe(true);
  expect(new Set(ids).size).toBe(ids.length);
}

describe('docs settings', () => {
  it('CYCLES_DOCS_PUBLIC: docs open without a key, every other route still needs one', async () => {
    const open = await start({ docsPublic: true });
    try {
      for (const app of [open.runtime, open.admin]) {
        expect((await app.inject({ method: 'GET', url: '/openapi.json' })).statusCode).toBe(200);
        expect((await app.inject({ method: 'GET', url: '/docs' })).statusCode).toBe(200);
      }
      expectEnvelope(await open.admin.inject({ method: 'GET', url: '/v1/admin/tenants' }), 401, 'UNAUTHORIZED');
      expectEnvelope(await open.runtime.inject({ method: 'GET', url: '/actuator/prometheus' }), 401, 'UNAUTHORIZED');
    } finally {
      await open.close();
    }
  });

  it('SWAGGER_ENABLED=false: no docs on either plane (404 envelope), the API unchanged', async () => {
    const off = await start({ swaggerEnabled: false });
    try {
      for (const app of [off.runtime, off.admin]) {
        for (const url of ['/openapi.json', '/docs', '/docs/json']) {
          expectEnvelope(await app.inject({ method: 'GET', url, headers: ADMIN }), 404, 'NOT_FOUND');
        }
      }
      expect((await off.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: ADMIN })).statusCode).toBe(200);
    } finally {
      await off.close();
    }
  });

  it('config: defaults and parsing of SWAGGER_ENABLED, CYCLES_DOCS_PUBLIC, DASHBOARD_CORS_ORIGIN', () => {
    const d = loadConfig({});
    expect([d.swaggerEnabled, d.docsPublic, d.dashboardCorsOrigins]).toEqual([true, false, ['http://localhost:5173']]);
    const c = loadConfig({ SWAGGER_ENABLED: 'false', CYCLES_DOCS_PUBLIC: 'true', DASHBOARD_CORS_ORIGIN: ' https://a.example.com , http://localhost:3000,' });
    expect([c.swaggerEnabled, c.docsPublic, c.dashboardCorsOrigins]).toEqual([false, true, ['https://a.example.com', 'http://localhost:3000']]);
    expect(loadConfig({ DASHBOARD_CORS_ORIGIN: '*' }).dashboardCorsOrigins).toEqual(['*']);
    expect(loadConfig({ SWAGGER_ENABLED: '0', CYCLES_DOCS_PUBLIC: '1' })).toMatchObject({ swaggerEnabled: false, docsPublic: true });
    expect(() => loadConfig({ SWAGGER_ENABLED: 'maybe' })).toThrow(/SWAGGER_ENABLED must be true or false/);
    expect(() => loadConfig({ CYCLES_DOCS_PUBLIC: 'yes please' })).toThrow(/CYCLES_DOCS_PUBLIC/);
    for (const bad of ['https://a.example.com/', 'https://a.example.com/app', 'a.example.com', 'ftp://a.example.com', ',']) {
      expect(() => loadConfig({ DASHBOARD_CORS_ORIGIN: bad }), bad).toThrow(/DASHBOARD_CORS_ORIGIN/);
    }
  });
});

function preflight(app: FastifyInstance, origin: string, url = '/v1/admin/tenants', method = 'POST') {
  return app.inject({
    method: 'OPTIONS',
    url,
    headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': 'x-admin-api-key,content-type' },
  });
}

describe('CORS for the operator dashboard (admin plane)', () => {
  it('a preflight from the default dashboard origin → 204 with the allowed methods and headers', async () => {
    for (const [url, method] of [['/v1/admin/tenants', 'POST'], ['/v1/admin/budgets', 'PATCH'], ['/v1/admin/api-keys/key_x', 'DELETE'], ['/v1/admin/tenants/t1', 'GET']] as const) {
      const res = await preflight(apps.admin, DASHBOARD, url, method);
      expect(res.statusCode, res.body).toBe(204);
      expect(res.body).toBe('');
      expect(res.headers['access-control-allow-origin']).toBe(DASHBOARD);
      expect(res.headers.vary).toMatch(/Origin/);
      const methods = String(res.headers['access-control-allow-methods']).split(/,\s*/);
      expect(methods).toEqual(expect.arrayContaining(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']));
      const allowed = String(res.headers['access-control-allow-headers']).toLowerCase().split(/,\s*/);
      expect(allowed).toEqual(expect.arrayContaining(['x-admin-api-key', 'x-cycles-api-key', 'content-type', 'x-request-id', 'traceparent', 'x-cycles-trace-id']));
      expect(Number(res.headers['access-control-max-age'])).toBeGreaterThan(0);
      expect(res.headers['access-control-allow-credentials']).toBeUndefined();
      expect(res.headers['x-request-id']).toBeDefined();
    }
  });

  it('a preflight from another origin gets no Access-Control-Allow-Origin (the browser refuses)', async () => {
    const res = await preflight(apps.admin, 'https://evil.example');
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('actual responses, success and error, carry the origin and the exposed correlation headers', async () => {
    for (const [headers, status] of [[ADMIN, 200], [{}, 401]] as const) {
      const res = await apps.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: { origin: DASHBOARD, ...headers } });
      expect(res.statusCode).toBe(status);
      expect(res.headers['access-control-allow-origin']).toBe(DASHBOARD);
      const exposed = String(res.headers['access-control-expose-headers']).toLowerCase().split(/,\s*/);
      expect(exposed).toEqual(expect.arrayContaining(['x-request-id', 'x-cycles-trace-id']));
    }
  });

  it('OPTIONS that is not a preflight still answers 405 with Allow (404 on unknown paths); other wrong methods too', async () => {
    const plain = await apps.admin.inject({ method: 'OPTIONS', url: '/v1/admin/tenants' });
    expectEnvelope(plain, 405, 'INVALID_REQUEST');
    expect(plain.headers.allow).toBe('GET, HEAD, POST');
    // An Origin alone (no Access-Control-Request-Method) is not a preflight either.
    const originOnly = await apps.admin.inject({ method: 'OPTIONS', url: '/v1/admin/tenants', headers: { origin: DASHBOARD } });
    expectEnvelope(originOnly, 405, 'INVALID_REQUEST');
    expectEnvelope(await apps.admin.inject({ method: 'OPTIONS', url: '/v1/admin/nope' }), 404, 'NOT_FOUND');
    expectEnvelope(await apps.admin.inject({ method: 'GET', url: '/v1/admin/nope', headers: ADMIN }), 404, 'NOT_FOUND');
    const patch = await apps.admin.inject({ method: 'PATCH', url: '/v1/admin/budgets/fund', headers: ADMIN });
    expectEnvelope(patch, 405, 'INVALID_REQUEST');
    expect(patch.headers.allow).toBe('POST');
  });

  it('the runtime plane has no CORS: a preflight there answers 405 as before', async () => {
    const res = await preflight(apps.runtime, DASHBOARD, '/v1/reservations');
    expectEnvelope(res, 405, 'INVALID_REQUEST');
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('DASHBOARD_CORS_ORIGIN: a list allows each listed origin only; `*` allows any', async () => {
    const listed = await start({ dashboardCorsOrigins: ['https://a.example.com', 'https://b.example.com'] });
    try {
      for (const origin of ['https://a.example.com', 'https://b.example.com']) {
        expect((await preflight(listed.admin, origin)).headers['access-control-allow-origin']).toBe(origin);
      }
      for (const origin of [DASHBOARD, 'https://c.example.com', 'https://a.example.com.evil.example']) {
        expect((await preflight(listed.admin, origin)).headers['access-control-allow-origin'], origin).toBeUndefined();
      }
    } finally {
      await listed.close();
    }
    const any = await start({ dashboardCorsOrigins: ['*'] });
    try {
      const res = await preflight(any.admin, 'https://anything.example');
      expect(res.statusCode).toBe(204);
      expect(res.headers['access-control-allow-origin']).toBe('*');
      const get = await any.admin.inject({ method: 'GET', url: '/v1/admin/tenants', headers: { origin: 'https://x.example', ...ADMIN } });
      expect(get.headers['access-control-allow-origin']).toBe('*');
    } finally {
      await any.close();
    }
  });
});
