import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MinuteLimiter } from '../src/api/routes/public.js';
import { json, startHarness, type Harness } from './helpers.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ keyPrefix: `cypub${randomBytes(2).toString('hex')}` });
});
afterAll(async () => h?.close());

describe('public runtime endpoints', () => {
  it('evidence ids are unknown (404) and the JWKS is empty, with the per-client limit headers', async () => {
    const e = await h.runtime.inject({ method: 'GET', url: '/v1/evidence/abc' });
    expect(e.statusCode).toBe(404);
    expect(json(e).error).toBe('NOT_FOUND');
    expect(e.headers['x-ratelimit-limit']).toBe('300');
    expect(Number(e.headers['x-ratelimit-remaining'])).toBeLessThan(300);
    const k = await h.runtime.inject({ method: 'GET', url: '/v1/.well-known/cycles-jwks.json' });
    expect(k.statusCode).toBe(200);
    expect(json(k)).toEqual({ keys: [] });
  });

  it('the 301st request of a client within a clock minute gets 429 LIMIT_EXCEEDED until the minute ends', () => {
    let now = Date.UTC(2026, 11, 4, 10, 0, 15, 500);
    const limiter = new MinuteLimiter(300, () => now);
    for (let i = 0; i < 300; i++) expect(limiter.take('1.2.3.4').limited).toBe(false);
    const over = limiter.take('1.2.3.4');
    expect(over).toMatchObject({ limited: true, remaining: 0, retryAfterS: 45, resetEpochS: Date.UTC(2026, 11, 4, 10, 1, 0) / 1000 });
    expect(limiter.take('5.6.7.8').limited).toBe(false);
    now = Date.UTC(2026, 11, 4, 10, 1, 0, 1);
    expect(limiter.take('1.2.3.4')).toMatchObject({ limited: false, remaining: 299 });
  });

  it('over HTTP: the 301st answer carries Retry-After and the protocol error envelope', async () => {
    // Stay clear of a minute boundary, so all 301 requests land in one window.
    if (Date.now() % 60_000 > 55_000) await new Promise((r) => setTimeout(r, 60_000 - (Date.now() % 60_000) + 50));
    const codes: number[] = [];
    let last;
    for (let i = 0; i < 301; i++) {
      last = await h.runtime.inject({ method: 'GET', url: '/v1/evidence/x', remoteAddress: '10.9.8.7' });
      codes.push(last.statusCode);
    }
    expect(codes.slice(0, 300).every((c) => c === 404)).toBe(true);
    expect(last!.statusCode).toBe(429);
    expect(json(last!).error).toBe('LIMIT_EXCEEDED');
    expect(Number(last!.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(last!.headers['x-ratelimit-remaining']).toBe('0');
  });
});
