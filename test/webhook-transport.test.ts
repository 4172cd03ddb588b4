import { createHmac } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { failureReason, postWebhook, sign } from '../src/domain/webhook-transport.js';
import { parseCidrs } from '../src/domain/webhooks.js';
import { freePorts } from './global-setup.js';

let server: http.Server;
let base = '';
let lastRedirectFollowed = false;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    if (req.url === '/redirect') {
      res.statusCode = 302;
      res.setHeader('location', '/target');
      return res.end();
    }
    if (req.url === '/target') lastRedirectFollowed = true;
    if (req.url === '/slow') return setTimeout(() => res.end(), 2000);
    res.statusCode = req.url === '/teapot' ? 418 : 200;
    res.end('ignored body');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

const opts = { connectTimeoutMs: 1000, timeoutMs: 500 };

describe('webhook transport', () => {
  it('2xx is a success; a 4xx is http_4xx; a 3xx is not followed and counts as transport_error', async () => {
    expect((await postWebhook(`${base}/ok`, '{}', {}, opts)).status).toBe(200);
    const teapot = await postWebhook(`${base}/teapot`, '{}', {}, opts);
    expect(teapot.status).toBe(418);
    expect(failureReason(teapot.status)).toBe('http_4xx');
    const redirect = await postWebhook(`${base}/redirect`, '{}', {}, opts);
    expect(redirect.status).toBe(302);
    expect(failureReason(redirect.status)).toBe('transport_error');
    expect(lastRedirectFollowed).toBe(false);
    expect(failureReason(503)).toBe('http_5xx');
  });

  it('a closed port, a timeout, a bad URL and a blocked address answer status 0 with the reason', async () => {
    const [closed] = await freePorts(1);
    const refused = await postWebhook(`http://127.0.0.1:${closed}/x`, '{}', {}, opts);
    expect(refused.status).toBe(0);
    expect(refused.error).toMatch(/ECONNREFUSED/);
    const slow = await postWebhook(`${base}/slow`, '{}', {}, opts);
    expect(slow.status).toBe(0);
    expect(slow.error).toMatch(/timed out after 500 ms/);
    expect(slow.elapsedMs).toBeGreaterThanOrEqual(450);
    expect((await postWebhook('not a url', '{}', {}, opts)).error).toMatch(/Invalid URL/);
    const list = parseCidrs(['127.0.0.0/8']);
    if ('error' in list) throw new Error(list.error);
    const blocked = await postWebhook(`${base}/ok`, '{}', {}, { ...opts, blockList: list });
    expect(blocked).toMatchObject({ status: 0 });
    expect(blocked.error).toMatch(/blocked address range/);
    const viaName = await postWebhook(`${base.replace('127.0.0.1', 'localhost')}/ok`, '{}', {}, { ...opts, blockList: list });
    expect(viaName.status).toBe(0);
    expect(viaName.error).toMatch(/blocked address/);
  });

  it('the signature is sha256= and the lowercase hex HMAC of the exact body with the secret as key', () => {
    expect(sign('whsec_abc', '{"a":1}')).toBe('sha256=' + createHmac('sha256', 'whsec_abc').update('{"a":1}').digest('hex'));
  });
});
