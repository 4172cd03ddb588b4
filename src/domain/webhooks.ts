import { BlockList, isIP } from 'node:net';
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import type { EmitContext, RecordFields } from '../store/admin-store.js';
import type { WebhookOwner, WebhookStore } from '../store/webhook-store.js';
import type { AuthContext, Correlation } from './auth.js';
import { actorJson } from './auth.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import { CyclesError } from './errors.js';
import { newEventIdBase, newId } from './ids.js';

/**
 * Webhook subscriptions (admin digest §2.5, §5) and the webhook-security config (§2.9). A
 * subscription belongs to a tenant or to `__system__`; its id carries the owner
 * (`whsub_<owner>_<16 hex>`, as policy ids do, ADR 0011) so every by-id call finds the owner's
 * slot without a global lookup. Delivery, the test probe, replay and delivery listings belong to
 * the events service and are not here.
 */

export const SYSTEM_OWNER = '__system__';
const TENANT_ID = /^[a-z0-9-]{1,64}$/;

export const EVENT_TYPES: Readonly<Record<string, readonly string[]>> = {
  budget: ['created', 'updated', 'funded', 'debited', 'reset', 'reset_spent', 'debt_repaid', 'frozen', 'unfrozen', 'closed',
    'closed_via_tenant_cascade', 'threshold_crossed', 'exhausted', 'over_limit_entered', 'over_limit_exited', 'debt_incurred',
    'burn_rate_anomaly'],
  reservation: ['denied', 'denial_rate_spike', 'expired', 'expiry_rate_spike', 'commit_overage', 'released_via_tenant_cascade'],
  tenant: ['created', 'updated', 'suspended', 'reactivated', 'closed', 'settings_changed'],
  webhook: ['created', 'updated', 'paused', 'resumed', 'disabled', 'deleted', 'disabled_via_tenant_cascade'],
  api_key: ['created', 'revoked', 'revoked_via_tenant_cascade', 'expired', 'permissions_changed', 'auth_failed', 'auth_failure_rate_spike'],
  policy: ['created', 'updated', 'deleted'],
  system: ['store_connection_lost', 'store_connection_restored', 'high_latency', 'webhook_delivery_failed', 'webhook_test'],
};
/** Categories a tenant-owned subscription may select (INVARIANT 2). */
export const TENANT_CATEGORIES: readonly string[] = ['budget', 'reservation', 'tenant'];

/** Subscription ids examined per list page before answering with a partial page and a cursor. */
export const WEBHOOK_SCAN_BUDGET = 5000;
const WEBHOOK_SCAN_WINDOW = 200;
/** Attempts of a PATCH whose record changed between the read and the write. */
const UPDATE_ATTEMPTS = 5;

export const DEFAULT_RETRY_POLICY = { max_retries: 5, initial_delay_ms: 1000, backoff_multiplier: 2.0, max_delay_ms: 60_000 };
export const DEFAULT_DISABLE_AFTER_FAILURES = 10;

export interface WebhookSecurityConfig {
  blocked_cidr_ranges: string[];
  allowed_url_patterns: string[];
  allow_http: boolean;
}

export const DEFAULT_WEBHOOK_SECURITY: WebhookSecurityConfig = {
  blocked_cidr_ranges: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '127.0.0.0/8', '169.254.0.0/16', '::1/128', 'fc00::/7'],
  allowed_url_patterns: [],
  allow_http: false,
};

/** The stored config (JSON text, or nothing stored) over the defaults. */
export function securityConfigFrom(raw: string | null | undefined): WebhookSecurityConfig {
  return raw ? { ...DEFAULT_WEBHOOK_SECURITY, ...(JSON.parse(raw) as Partial<WebhookSecurityConfig>) } : { ...DEFAULT_WEBHOOK_SECURITY };
}

/** The ranges a webhook connection is refused into at connect time; none when the list is empty. */
export function connectBlockList(config: WebhookSecurityConfig): BlockList | undefined {
  if (config.blocked_cidr_ranges.length === 0) return undefined;
  const list = parseCidrs(config.blocked_cidr_ranges);
  return 'error' in list ? undefined : list;
}

// --- ids ---

export function newSubscriptionId(ownerId: string): string {
  return newId(`whsub_${ownerId}`, 8);
}

/** The owner a subscription id names, or undefined when the id is not one of ours. */
export function ownerOfSubscriptionId(id: string): string | undefined {
  if (!id.startsWith('whsub_')) return undefined;
  const last = id.lastIndexOf('_');
  if (last <= 6 || !/^[0-9a-f]{16}$/.test(id.slice(last + 1))) return undefined;
  const owner = id.slice(6, last);
  return owner === SYSTEM_OWNER || TENANT_ID.test(owner) ? owner : undefined;
}

// --- secrets ---

/** Signing secrets at rest: AES-256-GCM, stored as `v1:<base64(iv | tag | ciphertext)>`. */
export class SecretCipher {
  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new Error('the webhook secret encryption key must be 32 bytes');
  }

  encrypt(plain: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    const ct = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    return `v1:${Buffer.concat([iv, cipher.getAuthTag(), ct]).toString('base64')}`;
  }

  decrypt(stored: string): string {
    if (!stored.startsWith('v1:')) throw new Error('unknown secret format');
    const raw = Buffer.from(stored.slice(3), 'base64');
    const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, 12));
    decipher.setAuthTag(raw.subarray(12, 28));
    return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
  }
}

/** The fallback key when WEBHOOK_SECRET_ENCRYPTION_KEY is unset (ADR 0013): HKDF-SHA256 of the admin key. */
export function deriveSecretKey(adminApiKey: string): Buffer {
  return Buffer.from(hkdfSync('sha256', adminApiKey, 'cycles', 'webhook-signing-secret-encryption-v1', 32));
}

export function newSigningSecret(): string {
  return `whsec_${randomBytes(32).toString('base64url')}`;
}

// --- URL validation (§5.7) ---

function ipv4Mapped(address: string): string | undefined {
  const m = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  return m?.[1];
}

/** A BlockList of CIDR ranges, or an error naming the first malformed entry. */
export function parseCidrs(ranges: readonly string[]): BlockList | { error: string } {
  const list = new BlockList();
  for (const range of ranges) {
    const slash = range.indexOf('/');
    const net = slash === -1 ? range : range.slice(0, slash);
    const family = isIP(net);
    const max = family === 4 ? 32 : 128;
    const prefix = slash === -1 ? max : Number(range.slice(slash + 1));
    if (family === 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > max || (slash !== -1 && !/^\d+$/.test(range.slice(slash + 1)))) {
      return { error: `invalid CIDR range '${range}'` };
    }
    list.addSubnet(net, prefix, family === 4 ? 'ipv4' : 'ipv6');
  }
  return list;
}

export function addressBlocked(list: BlockList, address: string): boolean {
  const v4 = ipv4Mapped(address);
  if (v4 !== undefined) return list.check(v4, 'ipv4');
  const family = isIP(address);
  if (family === 0) return true;
  return list.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

function globToRegExp(glob: string): RegExp {
  return new RegExp(`^${glob.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
}

export type Resolver = (hostname: string) => Promise<string[]>;

/** Why a URL is refused under a security config, or undefined when it is acceptable. */
export async function urlProblem(raw: string, config: WebhookSecurityConfig, resolve: Resolver): Promise<string | undefined> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return 'not a valid URL';
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'scheme must be https';
  if (url.protocol === 'http:' && !config.allow_http) return 'scheme must be https';
  if (url.hostname === '') return 'URL must have a host';
  if (config.blocked_cidr_ranges.length > 0) {
    const list = parseCidrs(config.blocked_cidr_ranges);
    if ('error' in list) return list.error;
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    let addresses: string[];
    if (isIP(host) !== 0) addresses = [host];
    else {
      try {
        addresses = await resolve(host);
      } catch {
        return 'host could not be resolved';
      }
    }
    if (addresses.length === 0) return 'host could not be resolved';
    if (addresses.some((a) => addressBlocked(list, a))) return 'host resolves to a blocked address range';
  }
  if (config.allowed_url_patterns.length > 0 && !config.allowed_url_patterns.some((p) => globToRegExp(p).test(raw))) {
    return 'URL matches no allowed pattern';
  }
  return undefined;
}

// --- selectors (§5.1) ---

function checkEventTypes(types: readonly string[]): void {
  for (const t of types) {
    const dot = t.indexOf('.');
    const known = dot > 0 && (EVENT_TYPES[t.slice(0, dot)]?.includes(t.slice(dot + 1)) ?? false);
    if (!known && !/^custom\.[a-z0-9_.-]+$/.test(t)) throw new CyclesError('INVALID_REQUEST', `Validation failed: unknown event type '${t}'`);
  }
}

/** Both invariants on the effective (stored ∪ requested) selectors of a subscription. */
export function checkSelectors(ownerId: string, types: readonly string[], categories: readonly string[]): void {
  if (types.length === 0 && categories.length === 0) {
    throw new CyclesError('INVALID_REQUEST', 'Subscription must retain at least one event_type or event_category');
  }
  if (ownerId === SYSTEM_OWNER) return;
  const badType = types.find((t) => !TENANT_CATEGORIES.includes(t.slice(0, t.indexOf('.'))));
  if (badType !== undefined) {
    throw new CyclesError('INVALID_REQUEST', `Tenant-owned subscriptions may only select budget, reservation and tenant events; '${badType}' is admin-only`);
  }
  const badCategory = categories.find((c) => !TENANT_CATEGORIES.includes(c));
  if (badCategory !== undefined) {
    throw new CyclesError('INVALID_REQUEST', `Tenant-owned subscriptions may only select budget, reservation and tenant categories; '${badCategory}' is admin-only`);
  }
}

// --- records and views ---

const JSON_FIELDS = ['event_types', 'event_categories', 'thresholds', 'headers', 'retry_policy', 'metadata'] as const;
const STRING_FIELDS = ['name', 'description', 'url', 'scope_filter', 'status'] as const;
/** Fields a PATCH may change, in the order changed_fields lists them. */
const UPDATABLE = [...STRING_FIELDS.filter((f) => f !== 'status'), ...JSON_FIELDS, 'disable_after_failures'] as const;
const VIEW_TIMESTAMPS = ['created_at', 'updated_at', 'last_triggered_at', 'last_success_at', 'last_failure_at'] as const;

function parseJson(v: string | undefined): unknown {
  return v === undefined ? undefined : JSON.parse(v);
}

/** The WebhookSubscription wire shape; the secret never leaves, header values are masked. */
export function subscriptionView(rec: RecordFields): Record<string, unknown> {
  const out: Record<string, unknown> = { subscription_id: rec.subscription_id, tenant_id: rec.tenant_id };
  if (rec.name !== undefined) out.name = rec.name;
  if (rec.description !== undefined) out.description = rec.description;
  out.url = rec.url;
  out.event_types = parseJson(rec.event_types) ?? [];
  const categories = parseJson(rec.event_categories) as string[] | undefined;
  if (categories !== undefined && categories.length > 0) out.event_categories = categories;
  if (rec.scope_filter !== undefined) out.scope_filter = rec.scope_filter;
  if (rec.thresholds !== undefined) out.thresholds = parseJson(rec.thresholds);
  const headers = parseJson(rec.headers) as Record<string, string> | undefined;
  if (headers !== undefined) out.headers = Object.fromEntries(Object.keys(headers).map((k) => [k, '********']));
  out.status = rec.status;
  out.retry_policy = parseJson(rec.retry_policy) ?? DEFAULT_RETRY_POLICY;
  out.disable_after_failures = Number(rec.disable_after_failures ?? DEFAULT_DISABLE_AFTER_FAILURES);
  out.consecutive_failures = Number(rec.consecutive_failures ?? 0);
  if (rec.metadata !== undefined) out.metadata = parseJson(rec.metadata);
  for (const f of VIEW_TIMESTAMPS) if (rec[f] !== undefined) out[f] = rec[f];
  return out;
}

function emitCtx(auth: AuthContext, corr: Correlation): EmitContext {
  return { eventIdBase: newEventIdBase(), requestId: corr.requestId, traceId: corr.traceId, actorJson: actorJson(auth) };
}

function owner(ownerId: string): WebhookOwner {
  return { ownerId, concrete: ownerId !== SYSTEM_OWNER };
}

function clampLimit(limit: number | undefined): number {
  if (limit === undefined) return 50;
  return Math.min(100, Math.max(1, limit));
}

/** Which surface a call came through: lifecycle events are emitted on the admin plane only (§5.6). */
export type WebhookPlane = 'admin' | 'tenant';

export interface WebhookListQuery {
  tenantId?: string;
  status?: string;
  eventType?: string;
  search?: string;
  cursor?: string;
  limit?: number;
}

export class WebhookService {
  constructor(
    private readonly store: WebhookStore,
    private readonly cipher: SecretCipher,
    private readonly resolve: Resolver,
  ) {}

  async securityConfig(): Promise<WebhookSecurityConfig> {
    return securityConfigFrom(await this.store.getSecurityConfig());
  }

  /** PUT replaces the config; omitted properties take their defaults. */
  async putSecurityConfig(body: Partial<WebhookSecurityConfig>): Promise<WebhookSecurityConfig> {
    const config: WebhookSecurityConfig = {
      blocked_cidr_ranges: body.blocked_cidr_ranges ?? [...DEFAULT_WEBHOOK_SECURITY.blocked_cidr_ranges],
      allowed_url_patterns: body.allowed_url_patterns ?? [],
      allow_http: body.allow_http ?? false,
    };
    const parsed = parseCidrs(config.blocked_cidr_ranges);
    if ('error' in parsed) throw new CyclesError('INVALID_REQUEST', `Validation failed: blocked_cidr_ranges: ${parsed.error}`);
    await this.store.putSecurityConfig(JSON.stringify(config));
    return config;
  }

  private async checkUrl(url: string): Promise<void> {
    const problem = await urlProblem(url, await this.securityConfig(), this.resolve);
    if (problem !== undefined) throw new CyclesError('WEBHOOK_URL_INVALID', `Webhook URL invalid: ${url} (${problem})`);
  }

  async create(
    auth: AuthContext,
    plane: WebhookPlane,
    requestedOwner: string | undefined,
    body: Record<string, unknown>,
    corr: Correlation,
  ): Promise<{ ownerId: string; subscription: Record<string, unknown>; signingSecret: string }> {
    const ownerId = auth.kind === 'tenant' ? auth.tenantId : requestedOwner === undefined ? SYSTEM_OWNER : requestedOwner;
    const types = body.event_types as string[];
    const categories = (body.event_categories as string[] | undefined) ?? [];
    checkEventTypes(types);
    checkSelectors(ownerId, types, categories);
    if (ownerId !== SYSTEM_OWNER && !TENANT_ID.test(ownerId)) throw new CyclesError('TENANT_NOT_FOUND', `Tenant not found: ${ownerId}`);
    const url = String(body.url);
    await this.checkUrl(url);

    const signingSecret = body.signing_secret === undefined ? newSigningSecret() : String(body.signing_secret);
    const now = new Date().toISOString();
    const id = newSubscriptionId(ownerId);
    const fields: RecordFields = { subscription_id: id, tenant_id: ownerId, url };
    if (body.name !== undefined) fields.name = String(body.name);
    if (body.description !== undefined) fields.description = String(body.description);
    fields.event_types = JSON.stringify(types);
    fields.event_categories = JSON.stringify(categories);
    if (body.scope_filter !== undefined) fields.scope_filter = String(body.scope_filter);
    for (const f of ['thresholds', 'headers', 'metadata'] as const) if (body[f] !== undefined) fields[f] = JSON.stringify(body[f]);
    fields.retry_policy = JSON.stringify({ ...DEFAULT_RETRY_POLICY, ...(body.retry_policy as object | undefined) });
    fields.disable_after_failures = String(body.disable_after_failures ?? DEFAULT_DISABLE_AFTER_FAILURES);
    Object.assign(fields, {
      status: 'ACTIVE', consecutive_failures: '0', created_at: now, updated_at: now,
      signing_secret_enc: this.cipher.encrypt(signingSecret), rev: '0',
    });
    const data = { subscription_id: id, tenant_id: ownerId, new_status: 'ACTIVE', changed_fields: [] };
    const result = await this.store.create(owner(ownerId), id, fields, plane === 'admin', JSON.stringify(data), emitCtx(auth, corr));
    switch (result) {
      case 'CREATED':
        return { ownerId, subscription: subscriptionView(fields), signingSecret };
      case 'TENANT_CLOSED':
        throw new CyclesError('TENANT_CLOSED', `Tenant is CLOSED: ${ownerId}`);
      case 'TENANT_NOT_FOUND':
        throw new CyclesError('TENANT_NOT_FOUND', `Tenant not found: ${ownerId}`);
      default:
        throw new CyclesError('INTERNAL_ERROR', 'Subscription id collision');
    }
  }

  /** The stored record, when it exists and the caller may see it (other tenants' → 404, never 403). */
  private async visible(auth: AuthContext, id: string): Promise<{ ownerId: string; rec: RecordFields }> {
    const ownerId = ownerOfSubscriptionId(id);
    const rec = ownerId === undefined ? undefined : await this.store.get(ownerId, id);
    if (ownerId === undefined || rec === undefined || (auth.kind === 'tenant' && auth.tenantId !== ownerId)) {
      throw new CyclesError('WEBHOOK_NOT_FOUND', `Webhook subscription not found: ${id}`);
    }
    return { ownerId, rec };
  }

  async get(auth: AuthContext, id: string): Promise<Record<string, unknown>> {
    return subscriptionView((await this.visible(auth, id)).rec);
  }

  async update(
    auth: AuthContext,
    plane: WebhookPlane,
    id: string,
    body: Record<string, unknown>,
    corr: Correlation,
  ): Promise<{ ownerId: string; subscription: Record<string, unknown> }> {
    if (body.event_types !== undefined) checkEventTypes(body.event_types as string[]);
    for (let attempt = 0; attempt < UPDATE_ATTEMPTS; attempt += 1) {
      const { ownerId, rec } = await this.visible(auth, id);
      const types = (body.event_types as string[] | undefined) ?? (parseJson(rec.event_types) as string[] | undefined) ?? [];
      const categories = (body.event_categories as string[] | undefined) ?? (parseJson(rec.event_categories) as string[] | undefined) ?? [];
      checkSelectors(ownerId, types, categories);
      if (body.url !== undefined && body.url !== rec.url) await this.checkUrl(String(body.url));

      const next: RecordFields = {};
      for (const f of STRING_FIELDS) if (body[f] !== undefined && f !== 'status') next[f] = String(body[f]);
      for (const f of JSON_FIELDS) if (body[f] !== undefined) next[f] = JSON.stringify(body[f]);
      if (body.retry_policy !== undefined) next.retry_policy = JSON.stringify({ ...DEFAULT_RETRY_POLICY, ...(body.retry_policy as object) });
      if (body.disable_after_failures !== undefined) next.disable_after_failures = String(body.disable_after_failures);
      const changed: string[] = UPDATABLE.filter((f) => next[f] !== undefined && next[f] !== rec[f]);
      if (body.signing_secret !== undefined) changed.push('signing_secret');

      const fields: RecordFields = {};
      for (const f of changed) if (f !== 'signing_secret') fields[f] = next[f]!;
      if (body.signing_secret !== undefined) fields.signing_secret_enc = this.cipher.encrypt(String(body.signing_secret));
      const previous = rec.status ?? 'ACTIVE';
      const status = body.status as string | undefined;
      let eventType: string | undefined;
      if (status === 'PAUSED' && previous === 'ACTIVE') eventType = 'webhook.paused';
      else if (status === 'ACTIVE' && previous !== 'ACTIVE') eventType = 'webhook.resumed';
      else if (changed.length > 0) eventType = 'webhook.updated';
      if (status !== undefined && status !== previous) fields.status = status;
      if (status === 'ACTIVE' && rec.consecutive_failures !== undefined && rec.consecutive_failures !== '0') fields.consecutive_failures = '0';
      if (Object.keys(fields).length === 0 && eventType === undefined) {
        return { ownerId, subscription: subscriptionView(rec) };
      }
      fields.updated_at = new Date().toISOString();
      const data: Record<string, unknown> = { subscription_id: id, tenant_id: ownerId, previous_status: previous, new_status: fields.status ?? previous, changed_fields: changed };
      const event = plane === 'admin' && eventType !== undefined
        ? { type: eventType, dataJson: JSON.stringify(data), correlationId: `webhook_update:${id}:${corr.requestId}` }
        : undefined;
      const result = await this.store.update(owner(ownerId), id, rec.rev ?? '0', fields, event, emitCtx(auth, corr));
      if (result === 'OK') return { ownerId, subscription: subscriptionView({ ...rec, ...fields }) };
      if (result === 'TENANT_CLOSED') throw new CyclesError('TENANT_CLOSED', `Tenant is CLOSED: ${ownerId}`);
      if (result === 'NOT_FOUND') throw new CyclesError('WEBHOOK_NOT_FOUND', `Webhook subscription not found: ${id}`);
    }
    throw new CyclesError('INTERNAL_ERROR', 'Subscription kept changing during the update');
  }

  async delete(auth: AuthContext, plane: WebhookPlane, id: string, corr: Correlation): Promise<{ ownerId: string }> {
    const { ownerId } = await this.visible(auth, id);
    const r = await this.store.delete(owner(ownerId), id, plane === 'admin', emitCtx(auth, corr));
    if (r.result === 'OK') return { ownerId };
    if (r.result === 'TENANT_CLOSED') throw new CyclesError('TENANT_CLOSED', `Tenant is CLOSED: ${ownerId}`);
    throw new CyclesError('WEBHOOK_NOT_FOUND', `Webhook subscription not found: ${id}`);
  }

  /** One page in ascending id order; `tenantId` undefined lists every owner (admin only). */
  async list(q: WebhookListQuery): Promise<Record<string, unknown>> {
    if (q.tenantId !== undefined && q.tenantId !== SYSTEM_OWNER && !TENANT_ID.test(q.tenantId)) return { subscriptions: [], has_more: false };
    const search = q.search?.trim().toLowerCase() || undefined;
    if (search !== undefined && search.length > 128) throw new CyclesError('INVALID_REQUEST', 'search must be at most 128 characters');
    let after: string | undefined;
    if (q.cursor !== undefined && q.cursor !== '') {
      const c = (() => {
        try {
          return decodeCursor<{ m?: string; id?: string }>(q.cursor!);
        } catch {
          return undefined;
        }
      })();
      const cursorOwner = typeof c?.id === 'string' ? ownerOfSubscriptionId(c.id) : undefined;
      if (c?.m !== 'wh' || cursorOwner === undefined || (q.tenantId !== undefined && cursorOwner !== q.tenantId)) {
        throw new CyclesError('INVALID_REQUEST', 'Cursor is not valid for this result set; restart pagination without a cursor');
      }
      after = c.id;
    }
    const limit = clampLimit(q.limit);
    const subscriptions: Record<string, unknown>[] = [];
    let examined = 0;
    let last = after;
    let exhausted = false;
    while (subscriptions.length < limit && examined < WEBHOOK_SCAN_BUDGET) {
      const ids = await this.store.ids(q.tenantId, last, Math.min(WEBHOOK_SCAN_WINDOW, WEBHOOK_SCAN_BUDGET - examined));
      if (ids.length === 0) {
        exhausted = true;
        break;
      }
      const recs = await Promise.all(ids.map((id) => {
        const o = ownerOfSubscriptionId(id);
        return o === undefined ? undefined : this.store.get(o, id);
      }));
      for (let i = 0; i < ids.length && subscriptions.length < limit; i += 1) {
        examined += 1;
        last = ids[i];
        const rec = recs[i];
        if (!rec) continue;
        if (q.status !== undefined && q.status !== '' && rec.status !== q.status) continue;
        if (q.eventType !== undefined && q.eventType !== '' && !((parseJson(rec.event_types) as string[]) ?? []).includes(q.eventType)) continue;
        if (search !== undefined && !rec.subscription_id!.toLowerCase().includes(search) && !(rec.url ?? '').toLowerCase().includes(search)) continue;
        subscriptions.push(subscriptionView(rec));
      }
    }
    if (!exhausted) exhausted = last === undefined || (await this.store.ids(q.tenantId, last, 1)).length === 0;
    const out: Record<string, unknown> = { subscriptions };
    if (!exhausted && last !== undefined) {
      out.next_cursor = encodeCursor({ m: 'wh', id: last });
      out.has_more = true;
    } else {
      out.has_more = false;
    }
    return out;
  }
}
