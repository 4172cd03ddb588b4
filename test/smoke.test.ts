import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTenant, json, startHarness, type Harness } from './helpers.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => h.close());

describe('smoke: reserve → commit', () => {
  it('commits a reservation and moves the ledger exactly', async () => {
    const t = await createTenant(h);
    const rid = await t.reserveOk(1000);
    const c = await t.commit(rid, 600);
    expect(c.statusCode).toBe(200);
    expect(json(c)).toEqual({ status: 'COMMITTED', charged: { unit: 'USD_MICROCENTS', amount: 600 }, released: { unit: 'USD_MICROCENTS', amount: 400 } });
    const ws = await t.balance('workspace:prod');
    expect(ws.spent.amount).toBe(600);
    expect(ws.reserved.amount).toBe(0);
    expect(ws.remaining.amount).toBe(99_400);
  });
});
