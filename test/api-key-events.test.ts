import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, createTenant, json, startHarness, type Harness } from './helpers.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ keyPrefix: `cyak${randomBytes(2).toString('hex')}` });
});
afterAll(async () => h?.close());

const headers = { 'x-admin-api-key': ADMIN_KEY };

async function outbox(tenantId: string): Promise<any[]> {
  const rows = (await h.system.redis.xrange(h.system.keys.outbox(tenantId), '-', '+')) as [string, string[]][];
  return rows.map(([, f]) => JSON.parse(f[1]!));
}

describe('api_key events (admin digest §5.6)', () => {
  it('create, permission change and revoke each append one api_key.* event; other changes append none', async () => {
    const t = await createTenant(h, { budgets: [] });
    const c = await h.admin.inject({ method: 'POST', url: '/v1/admin/api-keys', headers, payload: { tenant_id: t.id, name: 'ci', permissions: ['balances:read'] } });
    expect(c.statusCode, c.body).toBe(201);
    const keyId = json(c).key_id;
    const rename = await h.admin.inject({ method: 'PATCH', url: `/v1/admin/api-keys/${keyId}`, headers, payload: { name: 'renamed' } });
    expect(rename.statusCode, rename.body).toBe(200);
    const perms = await h.admin.inject({ method: 'PATCH', url: `/v1/admin/api-keys/${keyId}`, headers, payload: { permissions: ['balances:read', 'reservations:list'] } });
    expect(perms.statusCode, perms.body).toBe(200);
    const del = await h.admin.inject({ method: 'DELETE', url: `/v1/admin/api-keys/${keyId}`, headers });
    expect(del.statusCode, del.body).toBe(200);

    const mine = (await outbox(t.id)).filter((e) => e.category === 'api_key' && e.data?.key_id === keyId);
    expect(mine.map((e) => e.event_type)).toEqual(['api_key.created', 'api_key.permissions_changed', 'api_key.revoked']);
    expect(mine[0]).toMatchObject({ source: 'cycles-admin', tenant_id: t.id, data: { key_name: 'ci', new_status: 'ACTIVE', permissions: ['balances:read'] } });
    expect(mine[1].data.permissions).toEqual(['balances:read', 'reservations:list']);
    expect(mine[2].data).toMatchObject({ previous_status: 'ACTIVE', new_status: 'REVOKED' });
    for (const e of mine) {
      expect(e.scope).toBeUndefined();
      expect(JSON.stringify(e)).not.toContain('cyc_live_');
    }
  });
});
