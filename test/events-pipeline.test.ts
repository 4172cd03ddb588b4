import { createHmac, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, createTenant, json, sleep, startHarness, type Harness, type TestTenant } from './helpers.js';

/**
 * The events service end to end: real BullMQ workers, a real HTTP receiver, real Redis. Events
 * come from the runtime (a dry-run DENY appends reservation.denied) and travel outbox → relay →
 * stored event + delivery record → delivery job → signed POST.
 */

interface Received {
  at: number;
  headers: http.IncomingHttpHeaders;
  raw: string;
  json: any;
}

/** A webhook receiver on loopback; `respond` decides each answer (status, optional delay). */
class Receiver {
  readonly got: Received[] = [];
  respond: (r: Received, n: number) => { status: number; delayMs?: number } = () => ({ status: 204 });
  private server!: http.Server;
  url = '';

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const r: Received = { at: Date.now(), headers: req.headers, raw, json: JSON.parse(raw) };
        this.got.push(r);
        const { status, delayMs } = this.respond(r, this.got.length);
        const send = () => {
          res.statusCode = status;
          res.end();
        };
        if (delayMs) setTimeout(send, delayMs);
        else send();
      });
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
  }

  of(eventType: string): Received[] {
    return this.got.filter((r) => r.json.event_type === eventType);
  }

  async waitFor(n: number, pred: (r: Received) => boolean, timeoutMs = 10_000): Promise<Received[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hits = this.got.filter(pred);
      if (hits.length >= n) return hits;
      if (Date.now() > deadline) throw new Error(`receiver: wanted ${n}, got ${hits.length} (all: ${this.got.map((g) => g.json.event_type).join(',')})`);
      await sleep(25);
    }
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const adminHeaders = { 'x-admin-api-key': ADMIN_KEY };

async function allowLoopback(h: Harness): Promise<void> {
  const res = await h.admin.inject({
    method: 'PUT', url: '/v1/admin/config/webhook-security', headers: adminHeaders,
    payload: { allow_http: true, blocked_cidr_ranges: [], allowed_url_patterns: [] },
  });
  expect(res.statusCode, res.body).toBe(200);
}

async function subscribe(h: Harness, t: TestTenant, url: string, extra: Record<string, unknown> = {}): Promise<{ id: string; secret: string }> {
  const secret = `whsec_${randomBytes(12).toString('hex')}`;
  const res = await h.admin.inject({
    method: 'POST', url: `/v1/admin/webhooks?tenant_id=${t.id}`, headers: adminHeaders,
    payload: { url, event_types: ['reservation.denied'], signing_secret: secret, ...extra },
  });
  expect(res.statusCode, res.body).toBe(201);
  return { id: json(res).subscription.subscription_id, secret };
}

/** One reservation.denied event from the runtime (dry-run DENY); returns the response's request id. */
async function deny(t: TestTenant): Promise<string> {
  const res = await t.post('/v1/reservations', t.reserveBody(10_000_000_000, { dry_run: true }));
  expect(json(res).decision).toBe('DENY');
  return String(res.headers['x-request-id']);
}

async function deliveries(h: Harness, sub: string): Promise<any[]> {
  const res = await h.admin.inject({ method: 'GET', url: `/v1/admin/webhooks/${sub}/deliveries?limit=100`, headers: adminHeaders });
  expect(res.statusCode, res.body).toBe(200);
  return json(res).deliveries;
}

async function subscription(h: Harness, sub: string): Promise<any> {
  const res = await h.admin.inject({ method: 'GET', url: `/v1/admin/webhooks/${sub}`, headers: adminHeaders });
  return json(res);
}

async function until<T>(fn: () => Promise<T | undefined | false>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v as T;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const FAST = { expiryIntervalMs: 300, events: { reconcileIntervalMs: 1000, jobLockMs: 2000 } };

describe('events pipeline: delivery, retries, auto-disable', () => {
  let h: Harness;
  const rx = new Receiver();

  beforeAll(async () => {
    h = await startHarness({ keyPrefix: `cyevp${randomBytes(2).toString('hex')}`, ...FAST });
    await h.system.startEventsService();
    await allowLoopback(h);
    await rx.start();
  });
  afterAll(async () => {
    await h.close();
    await rx.close();
  });

  it('delivers a signed event the receiver can verify, with trace and event headers, and records SUCCESS', async () => {
    const t = await createTenant(h);
    const { id, secret } = await subscribe(h, t, rx.url);
    const requestId = await deny(t);
    const [r] = await rx.waitFor(1, (g) => g.json.tenant_id === t.id);
    const expected = `sha256=${createHmac('sha256', secret).update(r!.raw).digest('hex')}`;
    expect(r!.headers['x-cycles-signature']).toBe(expected);
    expect(r!.headers['x-cycles-event-id']).toBe(r!.json.event_id);
    expect(r!.headers['x-cycles-event-type']).toBe('reservation.denied');
    expect(r!.headers['x-request-id']).toBe(requestId);
    expect(r!.headers.traceparent).toMatch(new RegExp(`^00-${r!.json.trace_id}-[0-9a-f]{16}-01$`));
    expect(r!.json).toMatchObject({ category: 'reservation', source: 'cycles-server', tenant_id: t.id });
    const [d] = await until(async () => {
      const list = await deliveries(h, id);
      return list[0]?.status === 'SUCCESS' ? list : undefined;
    }, 5000, 'SUCCESS record');
    expect(d).toMatchObject({ subscription_id: id, event_id: r!.json.event_id, status: 'SUCCESS', attempts: 1, response_status: 204 });
    expect((await subscription(h, id)).last_success_at).toBeDefined();
    // The stored event is the delivered body.
    const stored = await h.admin.inject({ method: 'GET', url: `/v1/admin/events/${r!.json.event_id}`, headers: adminHeaders });
    expect(json(stored)).toEqual(r!.json);
  });

  it('retries failed attempts on the subscription backoff, then succeeds (gaps follow initial × multiplier^n)', async () => {
    const t = await createTenant(h);
    const { id } = await subscribe(h, t, rx.url, { retry_policy: { max_retries: 4, initial_delay_ms: 200, backoff_multiplier: 2, max_delay_ms: 1000 } });
    let n = 0;
    rx.respond = (r) => (r.json.tenant_id === t.id && ++n <= 2 ? { status: 500 } : { status: 200 });
    await deny(t);
    const hits = await rx.waitFor(3, (g) => g.json.tenant_id === t.id, 10_000);
    rx.respond = () => ({ status: 204 });
    expect(hits[1]!.at - hits[0]!.at).toBeGreaterThanOrEqual(190);
    expect(hits[2]!.at - hits[1]!.at).toBeGreaterThanOrEqual(390);
    const d = await until(async () => (await deliveries(h, id)).find((x) => x.status === 'SUCCESS'), 5000, 'SUCCESS');
    expect(d).toMatchObject({ attempts: 3, response_status: 200 });
    expect(new Set(hits.map((x) => x.json.event_id)).size).toBe(1);
  });

  it('a delivery that exhausts its retries is FAILED; reaching disable_after_failures disables the subscription and emits webhook.disabled', async () => {
    const t = await createTenant(h);
    const { id } = await subscribe(h, t, rx.url, { retry_policy: { max_retries: 1, initial_delay_ms: 100 }, disable_after_failures: 2 });
    rx.respond = (r) => (r.json.tenant_id === t.id ? { status: 503 } : { status: 204 });
    await deny(t);
    await until(async () => (await deliveries(h, id)).find((x) => x.status === 'FAILED'), 8000, 'first FAILED');
    expect((await subscription(h, id))).toMatchObject({ status: 'ACTIVE', consecutive_failures: 1 });
    await deny(t);
    const sub = await until(async () => {
      const s = await subscription(h, id);
      return s.status === 'DISABLED' ? s : undefined;
    }, 8000, 'DISABLED');
    rx.respond = () => ({ status: 204 });
    expect(sub).toMatchObject({ consecutive_failures: 2 });
    expect(sub.last_failure_at).toBeDefined();
    const failed = (await deliveries(h, id)).filter((x) => x.status === 'FAILED');
    expect(failed).toHaveLength(2);
    for (const f of failed) expect(f).toMatchObject({ attempts: 2, error_message: 'HTTP 503', response_status: 503 });
    const ev = await until(async () => {
      const res = await h.admin.inject({ method: 'GET', url: `/v1/admin/events?tenant_id=${t.id}&event_type=webhook.disabled`, headers: adminHeaders });
      return json(res).events?.[0];
    }, 5000, 'webhook.disabled event');
    expect(ev).toMatchObject({ category: 'webhook', source: 'cycles-events', actor: { type: 'system' },
      data: { subscription_id: id, new_status: 'DISABLED', disable_reason: 'consecutive_failures_exceeded_threshold' } });
    expect(ev.correlation_id).toMatch(new RegExp(`^webhook_auto_disable:${id}:del_[0-9a-f]{16}$`));
    // A disabled subscription gets no new deliveries.
    const before = rx.got.length;
    await deny(t);
    await sleep(500);
    expect(rx.got.length).toBe(before);
  });

  it('a success resets consecutive_failures to 0', async () => {
    const t = await createTenant(h);
    const { id } = await subscribe(h, t, rx.url, { retry_policy: { max_retries: 0 } });
    rx.respond = (r) => (r.json.tenant_id === t.id ? { status: 400 } : { status: 204 });
    await deny(t);
    await until(async () => ((await subscription(h, id)).consecutive_failures === 1 ? true : undefined), 5000, 'one failure');
    rx.respond = () => ({ status: 204 });
    await deny(t);
    await until(async () => ((await subscription(h, id)).consecutive_failures === 0 ? true : undefined), 5000, 'reset');
  });

  it('the test probe posts a signed system.webhook_test and leaves status and counters alone', async () => {
    const t = await createTenant(h);
    const { id, secret } = await subscribe(h, t, rx.url);
    rx.respond = (r) => (r.json.event_type === 'system.webhook_test' ? { status: 500 } : { status: 204 });
    const res = await h.admin.inject({ method: 'POST', url: `/v1/admin/webhooks/${id}/test`, headers: adminHeaders });
    rx.respond = () => ({ status: 204 });
    expect(res.statusCode, res.body).toBe(200);
    const b = json(res);
    expect(b).toMatchObject({ success: false, response_status: 500 });
    expect(b.event_id).toMatch(/^evt_test_[0-9a-f]{12}$/);
    const [r] = await rx.waitFor(1, (g) => g.json.event_id === b.event_id);
    expect(r!.headers['x-cycles-signature']).toBe(`sha256=${createHmac('sha256', secret).update(r!.raw).digest('hex')}`);
    expect(await subscription(h, id)).toMatchObject({ status: 'ACTIVE', consecutive_failures: 0 });
    expect(await deliveries(h, id)).toEqual([]);
  });

  it('replay re-delivers the window in timestamp order as new deliveries; all-or-narrow and one at a time', async () => {
    const t = await createTenant(h);
    const { id } = await subscribe(h, t, rx.url);
    const from = new Date(Date.now() - 1000).toISOString();
    for (let i = 0; i < 5; i++) await deny(t);
    const live = await rx.waitFor(5, (g) => g.json.tenant_id === t.id);
    const liveIds = live.map((g) => g.json.event_id);
    const firstDeliveries = new Set((await deliveries(h, id)).map((d) => d.delivery_id));

    const tooMany = await h.admin.inject({ method: 'POST', url: `/v1/admin/webhooks/${id}/replay`, headers: adminHeaders, payload: { from, max_events: 4 } });
    expect(tooMany.statusCode, tooMany.body).toBe(400);
    const res = await h.admin.inject({ method: 'POST', url: `/v1/admin/webhooks/${id}/replay`, headers: adminHeaders, payload: { from, max_events: 10 } });
    expect(res.statusCode, res.body).toBe(202);
    expect(json(res)).toMatchObject({ events_queued: 5 });
    const all = await rx.waitFor(10, (g) => g.json.tenant_id === t.id);
    const replayed = all.slice(5).map((g) => g.json);
    const byTime = [...replayed].sort((a, b) => Date.parse(a.timestamp) - Date.parse(b.timestamp));
    expect(replayed.map((e) => e.event_id)).toEqual(byTime.map((e) => e.event_id));
    expect(new Set(replayed.map((e) => e.event_id))).toEqual(new Set(liveIds));
    const after = await until(async () => {
      const list = await deliveries(h, id);
      return list.length === 10 && list.every((d) => d.status === 'SUCCESS') ? list : undefined;
    }, 5000, 'ten SUCCESS deliveries');
    expect(after.filter((d) => !firstDeliveries.has(d.delivery_id))).toHaveLength(5);

    // A replay lock held by another replay answers 409.
    await h.system.pipelineStore.redis.set(h.system.keys.replayLock(t.id, id), 'other', 'PX', 5000);
    const busy = await h.admin.inject({ method: 'POST', url: `/v1/admin/webhooks/${id}/replay`, headers: adminHeaders, payload: { from } });
    expect(busy.statusCode).toBe(409);
    expect(json(busy).error).toBe('REPLAY_IN_PROGRESS');
    await h.system.pipelineStore.redis.del(h.system.keys.replayLock(t.id, id));
  });

  it('the target is checked again at delivery time: a host in a blocked range is refused without a POST', async () => {
    const t = await createTenant(h);
    const { id } = await subscribe(h, t, rx.url, { retry_policy: { max_retries: 0 } });
    const put = (cfg: Record<string, unknown>) => h.admin.inject({ method: 'PUT', url: '/v1/admin/config/webhook-security', headers: adminHeaders, payload: cfg });
    expect((await put({ allow_http: true, blocked_cidr_ranges: ['127.0.0.0/8'], allowed_url_patterns: [] })).statusCode).toBe(200);
    try {
      await sleep(2100); // the delivery worker caches the security config for 2 s
      await deny(t);
      const failed = await until(async () => (await deliveries(h, id)).find((x) => x.status === 'FAILED'), 5000, 'refused delivery');
      expect(failed.error_message).toMatch(/blocked address range/);
      expect(failed.response_status).toBe(0);
      expect(rx.got.filter((g) => g.json.tenant_id === t.id)).toHaveLength(0);
    } finally {
      await allowLoopback(h);
      await sleep(2100);
    }
  });

  it('bull-board at /admin/queues: Basic challenge without the key, every queue and scheduler with it', async () => {
    const anon = await h.admin.inject({ method: 'GET', url: '/admin/queues' });
    expect(anon.statusCode).toBe(401);
    expect(anon.headers['www-authenticate']).toBe('Basic realm="cycles"');
    const basic = { authorization: `Basic ${Buffer.from(`ops:${ADMIN_KEY}`).toString('base64')}` };
    const page = await h.admin.inject({ method: 'GET', url: '/admin/queues', headers: basic });
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('Cycles queues');
    const api = await h.admin.inject({ method: 'GET', url: '/admin/queues/api/queues', headers: basic });
    expect(api.statusCode, api.body).toBe(200);
    const names = (json(api).queues as any[]).map((q) => q.name).sort();
    expect(names).toEqual(['deliveries', 'expiry', 'reconcile', 'relay', 'retention']);
    const expiry = (json(api).queues as any[]).find((q) => q.name === 'expiry');
    expect(expiry.jobSchedulerCount).toBe(1);
  });

  it('several events for several subscriptions: every (event, subscription) pair delivered exactly once', async () => {
    const t = await createTenant(h);
    await subscribe(h, t, rx.url);
    await subscribe(h, t, rx.url, { event_categories: ['reservation'] });
    for (let i = 0; i < 10; i++) await deny(t);
    const hits = await rx.waitFor(20, (g) => g.json.tenant_id === t.id);
    await sleep(300);
    const again = rx.got.filter((g) => g.json.tenant_id === t.id);
    expect(again).toHaveLength(20);
    const perEvent = new Map<string, number>();
    for (const g of hits) perEvent.set(g.json.event_id, (perEvent.get(g.json.event_id) ?? 0) + 1);
    expect([...perEvent.values()].every((n) => n === 2)).toBe(true);
  });
});

describe('events pipeline: worker availability', () => {
  const rx = new Receiver();
  beforeAll(async () => rx.start());
  afterAll(async () => rx.close());

  it('events produced while no worker runs are relayed and delivered once the events service starts', async () => {
    const h = await startHarness({ keyPrefix: `cyevq${randomBytes(2).toString('hex')}`, ...FAST });
    try {
      await allowLoopback(h);
      const t = await createTenant(h);
      const { id } = await subscribe(h, t, rx.url);
      for (let i = 0; i < 3; i++) await deny(t);
      await sleep(300);
      expect(rx.got.filter((g) => g.json.tenant_id === t.id)).toHaveLength(0);
      expect(await h.system.pipelineStore.outboxLength(t.id)).toBeGreaterThanOrEqual(3);
      await h.system.startEventsService();
      await rx.waitFor(3, (g) => g.json.tenant_id === t.id);
      expect(await until(async () => ((await h.system.pipelineStore.outboxLength(t.id)) === 0 ? true : undefined), 3000)).toBe(true);
      expect((await deliveries(h, id)).every((d) => d.status === 'SUCCESS')).toBe(true);
    } finally {
      await h.close();
    }
  });

  it('a delivery older than MAX_DELIVERY_AGE_MS fails as stale without a POST', async () => {
    const h = await startHarness({ keyPrefix: `cyevs${randomBytes(2).toString('hex')}`, ...FAST, events: { ...FAST.events, maxDeliveryAgeMs: 1000 } });
    try {
      await allowLoopback(h);
      const t = await createTenant(h);
      const { id } = await subscribe(h, t, rx.url);
      await deny(t);
      // Relay only (store the event and create the delivery), then let the delivery age.
      const svc = await h.system.startEventsService();
      await svc.queues.deliveries.pause();
      const d = await until(async () => (await deliveries(h, id))[0], 5000, 'delivery record');
      expect(d.status).toBe('PENDING');
      await sleep(1200);
      await svc.queues.deliveries.resume();
      const failed = await until(async () => (await deliveries(h, id)).find((x) => x.status === 'FAILED'), 5000, 'stale FAILED');
      expect(failed.error_message).toMatch(/^Delivery expired: 0h old \(max 0h\)$/);
      expect(failed.attempts).toBe(0);
      expect(rx.got.filter((g) => g.json.tenant_id === t.id)).toHaveLength(0);
      expect((await subscription(h, id)).consecutive_failures).toBe(0);
    } finally {
      await h.close();
    }
  });

  it('two events services on one Redis never deliver one job twice', async () => {
    const prefix = `cyev2${randomBytes(2).toString('hex')}`;
    const a = await startHarness({ keyPrefix: prefix, ...FAST });
    const b = await startHarness({ keyPrefix: prefix, ...FAST });
    try {
      await a.system.startEventsService();
      await b.system.startEventsService();
      await allowLoopback(a);
      const t = await createTenant(a);
      await subscribe(a, t, rx.url);
      rx.respond = () => ({ status: 204, delayMs: 20 });
      await Promise.all(Array.from({ length: 30 }, () => deny(t)));
      await rx.waitFor(30, (g) => g.json.tenant_id === t.id);
      await sleep(500);
      rx.respond = () => ({ status: 204 });
      const ids = rx.got.filter((g) => g.json.tenant_id === t.id).map((g) => g.json.event_id);
      expect(ids).toHaveLength(30);
      expect(new Set(ids).size).toBe(30);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('events pipeline: expiry sweep and reconciliation', () => {
  it('the scheduled sweep expires thousands of abandoned reservations and returns every hold', async () => {
    const h = await startHarness({ keyPrefix: `cyevx${randomBytes(2).toString('hex')}`, ...FAST });
    try {
      const t = await createTenant(h, { budgets: [['', 10_000_000], ['workspace:prod', 10_000_000]] });
      const N = 2000;
      for (let i = 0; i < N; i += 200) {
        await Promise.all(Array.from({ length: 200 }, () => t.reserveOk(10, { ttl_ms: 1000, grace_period_ms: 0 })));
      }
      const held = await t.balance('workspace:prod');
      expect(held.reserved.amount).toBe(N * 10);
      await h.system.startEventsService();
      const after = await until(async () => {
        const b = await t.balance('workspace:prod');
        return b.reserved.amount === 0 ? b : undefined;
      }, 20_000, 'all holds returned');
      expect(after.remaining.amount).toBe(10_000_000);
      expect((await t.balance('')).reserved.amount).toBe(0);
      const expired = await until(async () => {
        const res = await h.admin.inject({ method: 'GET', url: `/v1/admin/events?tenant_id=${t.id}&event_type=reservation.expired&limit=100`, headers: adminHeaders });
        const b = json(res);
        return b.events.length === 100 ? b : undefined;
      }, 10_000, 'expired events stored');
      expect(expired.has_more).toBe(true);
    } finally {
      await h.close();
    }
  }, 60_000);

  it('reconciliation reports ledger drift without repairing it, and re-queues a delivery left without a job', async () => {
    const h = await startHarness({ keyPrefix: `cyevr${randomBytes(2).toString('hex')}`, expiryIntervalMs: 60_000, events: { reconcileIntervalMs: 3_600_000 } });
    const rx = new Receiver();
    await rx.start();
    try {
      await allowLoopback(h);
      const t = await createTenant(h);
      await t.reserveOk(100);
      const svc = await h.system.startEventsService();
      expect((await svc.auditLedgers()).drift).toBe(0);
      const ledgerKey = h.system.keys.budget(t.id, `tenant:${t.id}/workspace:prod`, 'USD_MICROCENTS');
      await h.system.redis.hincrby(ledgerKey, 'reserved', 7);
      expect((await svc.auditLedgers()).drift).toBe(1);
      expect(await h.system.redis.hget(ledgerKey, 'reserved')).toBe('107');
      // The explicit, audited repair sets reserved back to the sum of the ACTIVE holds.
      const scope = encodeURIComponent(`tenant:${t.id}/workspace:prod`);
      const fix = await h.admin.inject({ method: 'POST', url: `/v1/admin/budgets/reconcile-reserved?tenant_id=${t.id}&scope=${scope}&unit=USD_MICROCENTS`, headers: adminHeaders });
      expect(fix.statusCode, fix.body).toBe(200);
      expect(json(fix)).toMatchObject({ previous_reserved: 107, reserved: 100, changed: true });
      expect((await svc.auditLedgers()).drift).toBe(0);
      const audited = await h.admin.inject({ method: 'GET', url: `/v1/admin/audit/logs?tenant_id=${t.id}&operation=reconcileBudgetReserved`, headers: adminHeaders });
      expect(json(audited).logs).toHaveLength(1);
      const missing = await h.admin.inject({ method: 'POST', url: `/v1/admin/budgets/reconcile-reserved?tenant_id=${t.id}&scope=${scope}&unit=TOKENS`, headers: adminHeaders });
      expect(missing.statusCode).toBe(404);

      // A delivery record with no job (as after a crash between relay steps), older than the grace.
      const { id } = await subscribe(h, t, rx.url);
      await deny(t);
      const [event] = await rx.waitFor(1, (g) => g.json.tenant_id === t.id);
      const lostId = `del_${randomBytes(8).toString('hex')}`;
      await h.system.pipelineStore.createDeliveries(t.id, [{
        deliveryId: lostId, subscriptionId: id, eventId: event!.json.event_id, eventType: 'reservation.denied', tenantId: t.id,
      }], 60_000, new Date(Date.now() - 60_000));
      expect(await svc.requeueLostDeliveries()).toBe(1);
      await rx.waitFor(2, (g) => g.json.tenant_id === t.id);
      const rec = await until(async () => {
        const d = (await deliveries(h, id)).find((x) => x.delivery_id === lostId);
        return d?.status === 'SUCCESS' ? d : undefined;
      }, 5000, 'lost delivery delivered');
      expect(rec.attempts).toBe(1);
      expect(await svc.requeueLostDeliveries()).toBe(0);

      // A close whose cascade never ran (the process died right after the flip) is finished.
      const c = await createTenant(h);
      const held = await c.reserveOk(100);
      await h.system.adminStore.markCascadePending(c.id, Date.now() - 120_000);
      const e = { eventIdBase: 'evt_0000000001', requestId: 'test', traceId: '0'.repeat(31) + '1', actorJson: '{"type":"admin"}' };
      expect((await h.system.adminStore.updateTenant(c.id, 'CLOSED', new Date().toISOString(), {}, [], e)).result).toBe('OK');
      expect((await c.reserve(1)).statusCode).toBe(409);
      const report = await svc.reconcileOnce();
      expect(report.cascades).toBe(1);
      expect((await c.reserve(1)).statusCode).toBe(401);
      const r = await h.runtime.inject({ method: 'GET', url: `/v1/reservations/${held}`, headers: adminHeaders });
      expect(json(r).status).toBe('RELEASED');
      expect((await svc.reconcileOnce()).cascades).toBe(0);
    } finally {
      await h.close();
      await rx.close();
    }
  });
});

describe('events pipeline: a killed worker', () => {
  it('a job held by a SIGKILLed events process is retried by another worker and ends consistent', async () => {
    const { spawn } = await import('node:child_process');
    const { freePorts } = await import('./global-setup.js');
    const { inject } = await import('vitest');
    const prefix = `cyevk${randomBytes(2).toString('hex')}`;
    const h = await startHarness({ keyPrefix: prefix, expiryIntervalMs: 60_000, events: { jobLockMs: 1500 } });
    const rx = new Receiver();
    await rx.start();
    const [eventsPort] = await freePorts(1);
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'events'], {
      env: {
        ...process.env, REDIS_URL: inject('redisUrl'), CYCLES_KEY_PREFIX: prefix, ADMIN_API_KEY: ADMIN_KEY,
        CYCLES_EVENTS_PORT: String(eventsPort), CYCLES_JOB_LOCK_MS: '1500', LOG_LEVEL: 'silent', CYCLES_WORKERS: '1',
      },
      stdio: 'ignore',
    });
    try {
      await allowLoopback(h);
      const t = await createTenant(h);
      const { id } = await subscribe(h, t, rx.url);
      // The first POST never gets an answer: the process dies while it waits.
      rx.respond = (_r, n) => (n === 1 ? { status: 204, delayMs: 600_000 } : { status: 204 });
      await deny(t);
      await rx.waitFor(1, (g) => g.json.tenant_id === t.id, 20_000);
      child.kill('SIGKILL');
      await h.system.startEventsService();
      const hits = await rx.waitFor(2, (g) => g.json.tenant_id === t.id, 15_000);
      expect(hits[0]!.json.event_id).toBe(hits[1]!.json.event_id);
      const d = await until(async () => {
        const x = (await deliveries(h, id))[0];
        return x?.status === 'SUCCESS' ? x : undefined;
      }, 5000, 'SUCCESS after takeover');
      expect(d.attempts).toBe(1);
      expect(await deliveries(h, id)).toHaveLength(1);
    } finally {
      child.kill('SIGKILL');
      await h.close();
      await rx.close();
    }
  }, 60_000);
});

describe('events pipeline: retention', () => {
  it('trims event, delivery and audit index entries older than their retention, and keeps recent ones', async () => {
    const h = await startHarness({ keyPrefix: `cyevt${randomBytes(2).toString('hex')}`, expiryIntervalMs: 60_000, events: { eventTtlMs: 86_400_000, deliveryTtlMs: 86_400_000, auditRetentionMs: 86_400_000, auditUnauthRetentionMs: 3_600_000 } });
    try {
      const svc = await h.system.startEventsService();
      const k = h.system.keys;
      const r = h.system.redis;
      const old = Date.now() - 2 * 86_400_000;
      const t = await createTenant(h);
      await r.zadd(k.tenantEvents(t.id), old, 'evt_old', Date.now(), 'evt_new');
      await r.zadd(k.allEvents(), old, 'evt_old');
      await r.zadd(k.auditIndex(t.id), old, 'log_old', Date.now(), 'log_new');
      await r.zadd(k.auditIndex('__unauth__'), Date.now() - 7_200_000, 'log_unauth_old', Date.now(), 'log_unauth_new');
      const sub = `whsub_${t.id}_${randomBytes(8).toString('hex')}`;
      await r.zadd(k.webhookRegistry(), 0, sub);
      await r.zadd(k.subscriptionDeliveries(t.id, sub), old, 'del_old', Date.now(), 'del_new');
      expect(await svc.retentionOnce()).toBeGreaterThanOrEqual(5);
      const kept = await r.zrange(k.tenantEvents(t.id), 0, -1);
      expect(kept).toContain('evt_new');
      expect(kept).not.toContain('evt_old');
      expect(await r.zscore(k.allEvents(), 'evt_old')).toBeNull();
      expect(await r.zrange(k.auditIndex(t.id), 0, -1)).toContain('log_new');
      expect(await r.zrange(k.auditIndex(t.id), 0, -1)).not.toContain('log_old');
      expect(await r.zrange(k.auditIndex('__unauth__'), 0, -1)).toEqual(['log_unauth_new']);
      expect(await r.zrange(k.subscriptionDeliveries(t.id, sub), 0, -1)).toEqual(['del_new']);
      await r.zrem(k.webhookRegistry(), sub);
    } finally {
      await h.close();
    }
  });

  it('AUDIT_SAMPLE_UNAUTHENTICATED 0 writes no row for a request without credentials; authenticated failures are always kept', async () => {
    const h = await startHarness({ keyPrefix: `cyeva${randomBytes(2).toString('hex')}`, events: { auditUnauthSampleRate: 0 } });
    try {
      expect((await h.admin.inject({ method: 'GET', url: '/v1/admin/tenants' })).statusCode).toBe(401);
      expect((await h.admin.inject({ method: 'GET', url: '/v1/admin/tenants/nope-nope', headers: adminHeaders })).statusCode).toBe(404);
      await sleep(100);
      const unauth = await h.admin.inject({ method: 'GET', url: '/v1/admin/audit/logs?tenant_id=__unauth__', headers: adminHeaders });
      expect(json(unauth).logs).toEqual([]);
      const adminRows = await h.admin.inject({ method: 'GET', url: '/v1/admin/audit/logs?tenant_id=__admin__', headers: adminHeaders });
      expect((json(adminRows).logs as any[]).some((l) => l.status === 404)).toBe(true);
    } finally {
      await h.close();
    }
  });
});

describe('events pipeline: metrics', () => {
  it('delivery counters carry the tenant label, and none does with CYCLES_METRICS_TENANT_TAG_ENABLED=false', async () => {
    const rx = new Receiver();
    await rx.start();
    const scrape = async (h: Harness) =>
      (await h.runtime.inject({ method: 'GET', url: '/actuator/prometheus', headers: adminHeaders })).body.split('\n').filter((l) => l.startsWith('cycles_webhook_'));
    for (const tag of [true, false]) {
      const h = await startHarness({ keyPrefix: `cyevm${randomBytes(2).toString('hex')}`, ...FAST, events: { ...FAST.events, metricsTenantTag: tag } });
      try {
        await h.system.startEventsService();
        await allowLoopback(h);
        const t = await createTenant(h);
        await subscribe(h, t, rx.url);
        await deny(t);
        await rx.waitFor(1, (g) => g.json.tenant_id === t.id);
        const lines = await until(async () => {
          const l = await scrape(h);
          return l.some((x) => x.startsWith('cycles_webhook_delivery_success_total{')) ? l : undefined;
        }, 5000, 'success counter');
        const attempts = lines.find((l) => l.startsWith('cycles_webhook_delivery_attempts_total{'));
        expect(attempts).toBeDefined();
        if (tag) expect(attempts).toContain(`tenant="${t.id}"`);
        else expect(lines.filter((l) => l.includes('tenant='))).toEqual([]);
      } finally {
        await h.close();
      }
    }
    await rx.close();
  });
});

describe('events pipeline: a relay that crashes midway', () => {
  it('redoes the batch with the same ids: every event stored once and delivered once', async () => {
    const { Queue } = await import('bullmq');
    const { Redis } = await import('ioredis');
    const { Relay } = await import('../src/workers/relay.js');
    const { pino } = await import('pino');
    const prefix = `cyevc${randomBytes(2).toString('hex')}`;
    const h = await startHarness({ keyPrefix: prefix, ...FAST });
    const rx = new Receiver();
    await rx.start();
    try {
      await allowLoopback(h);
      const t = await createTenant(h);
      const { id } = await subscribe(h, t, rx.url);
      for (let i = 0; i < 5; i++) await deny(t);
      // A relay whose queue connection is gone: it stores the events and creates the delivery
      // records, then fails to enqueue, as a process dying between those steps would.
      const { freePorts } = await import('./global-setup.js');
      const [closed] = await freePorts(1);
      const dead = new Redis(`redis://127.0.0.1:${closed}`, { maxRetriesPerRequest: 0, retryStrategy: () => null });
      dead.on('error', () => {});
      const queue = new Queue('deliveries', { connection: dead, prefix: `{${prefix}:q}` });
      queue.on('error', () => {});
      const crashed = new Relay({ store: h.system.pipelineStore, deliveries: queue, eventTtlMs: 86_400_000, deliveryTtlMs: 86_400_000, logger: pino({ level: 'silent' }) });
      await expect(crashed.relayBatch(t.id)).rejects.toThrow();
      await queue.close().catch(() => {});
      dead.disconnect();
      expect(await h.system.pipelineStore.outboxLength(t.id)).toBeGreaterThanOrEqual(5);
      const half = await deliveries(h, id);
      expect(half).toHaveLength(5);
      expect(half.every((d) => d.status === 'PENDING')).toBe(true);

      await h.system.startEventsService();
      const got = await rx.waitFor(5, (g) => g.json.tenant_id === t.id);
      await sleep(500);
      const all = rx.got.filter((g) => g.json.tenant_id === t.id);
      expect(all).toHaveLength(5);
      expect(new Set(all.map((g) => g.json.event_id)).size).toBe(5);
      expect(new Set(got.map((g) => g.json.event_id))).toEqual(new Set(half.map((d) => d.event_id)));
      const after = await until(async () => {
        const list = await deliveries(h, id);
        return list.every((d) => d.status === 'SUCCESS') ? list : undefined;
      }, 5000, 'all SUCCESS');
      expect(after.map((d) => d.delivery_id).sort()).toEqual(half.map((d) => d.delivery_id).sort());
      const events = await h.admin.inject({ method: 'GET', url: `/v1/admin/events?tenant_id=${t.id}&event_type=reservation.denied&limit=100`, headers: adminHeaders });
      expect(json(events).events).toHaveLength(5);
      expect(await h.system.pipelineStore.outboxLength(t.id)).toBe(0);
    } finally {
      await h.close();
      await rx.close();
    }
  });
});
