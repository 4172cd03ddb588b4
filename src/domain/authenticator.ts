import { createHash, timingSafeEqual } from 'node:crypto';
import type { AdminStore } from '../store/admin-store.js';
import type { AuthContext } from './auth.js';

export type TenantAuthResult = { ok: true; auth: Extract<AuthContext, { kind: 'tenant' }> } | { ok: false; reason: string };

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

interface CacheEntry {
  result: TenantAuthResult;
  keyId: string | undefined;
  expiresAtMs: number;
}

/** Bound on cached key lookups, so a flood of random keys cannot grow memory without limit. */
const MAX_CACHE_ENTRIES = 10_000;

/**
 * Resolves API keys to tenants. Results are cached in-process for a short TTL (default 1 s) and
 * dropped immediately when a key changes anywhere (Redis pub/sub invalidation), so a revoked key
 * stops working on every instance within the TTL at worst.
 */
export class Authenticator {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly adminKey: Buffer | undefined;

  constructor(
    private readonly store: AdminStore,
    adminApiKey: string | undefined,
    private readonly cacheTtlMs: number,
  ) {
    this.adminKey = adminApiKey ? Buffer.from(adminApiKey, 'utf8') : undefined;
  }

  get adminKeyConfigured(): boolean {
    return this.adminKey !== undefined;
  }

  /** Constant-time comparison of a presented admin key. */
  verifyAdminKey(presented: string): boolean {
    if (!this.adminKey) return false;
    const given = Buffer.from(presented, 'utf8');
    // Compare equal-length buffers so the timing does not reveal the key length either.
    const a = createHash('sha256').update(given).digest();
    const b = createHash('sha256').update(this.adminKey).digest();
    return timingSafeEqual(a, b) && given.length === this.adminKey.length;
  }

  async authenticateTenant(secret: string, nowMs: number = Date.now()): Promise<TenantAuthResult> {
    const hash = hashSecret(secret);
    const cached = this.cache.get(hash);
    if (cached && cached.expiresAtMs > nowMs) return cached.result;
    const rec = await this.store.findApiKeyBySecretHash(hash);
    let result: TenantAuthResult;
    if (!rec) result = { ok: false, reason: 'KEY_NOT_FOUND' };
    else if (rec.status !== 'ACTIVE') result = { ok: false, reason: rec.status === 'EXPIRED' ? 'KEY_EXPIRED' : 'KEY_REVOKED' };
    else if (rec.expires_at && Date.parse(rec.expires_at) <= nowMs) result = { ok: false, reason: 'KEY_EXPIRED' };
    else if (!rec.tenant_id) result = { ok: false, reason: 'TENANT_NOT_FOUND' };
    else {
      result = {
        ok: true,
        auth: {
          kind: 'tenant',
          tenantId: rec.tenant_id,
          keyId: rec.key_id ?? '',
          permissions: JSON.parse(rec.permissions ?? '[]') as string[],
          scopeFilter: JSON.parse(rec.scope_filter ?? '[]') as string[],
        },
      };
    }
    if (this.cacheTtlMs > 0) {
      if (this.cache.size >= MAX_CACHE_ENTRIES) this.cache.clear();
      const expiresAtMs = rec?.expires_at ? Math.min(nowMs + this.cacheTtlMs, Date.parse(rec.expires_at)) : nowMs + this.cacheTtlMs;
      this.cache.set(hash, { result, keyId: rec?.key_id, expiresAtMs });
    }
    return result;
  }

  /** Drops cached results of one key (or all, for '*'), on a change published by any instance. */
  invalidate(keyId: string): void {
    if (keyId === '*') {
      this.cache.clear();
      return;
    }
    for (const [hash, entry] of this.cache) if (entry.keyId === keyId) this.cache.delete(hash);
  }
}
