import { createHash } from 'node:crypto';
import { EVENT_TYPES, SYSTEM_OWNER, TENANT_CATEGORIES } from './webhooks.js';

/**
 * How an outbox entry becomes a stored Event and which subscriptions it is delivered to
 * (events digest §1.1, §2.3, §2.4; admin digest §5). Pure functions: the relay and replay both
 * route with them, so live dispatch and replay can never disagree.
 */

/** An outbox entry as the scripts write it (common.lua `emit`). */
export interface OutboxEvent {
  event_id: string;
  event_type: string;
  category: string;
  timestamp_ms: number;
  tenant_id: string;
  scope?: string;
  actor?: Record<string, unknown>;
  source: string;
  data?: Record<string, unknown>;
  correlation_id?: string;
  request_id?: string;
  trace_id?: string;
  trace_flags?: string;
  traceparent_inbound_valid?: boolean;
  metadata?: Record<string, unknown>;
}

/** The wire Event, in the reference's field order, nulls omitted (additionalProperties: false). */
export function wireEvent(e: OutboxEvent): Record<string, unknown> {
  const out: Record<string, unknown> = {
    event_id: e.event_id,
    event_type: e.event_type,
    category: e.category,
    timestamp: new Date(e.timestamp_ms).toISOString(),
    tenant_id: e.tenant_id,
  };
  if (e.scope != null && e.scope !== '') out.scope = e.scope;
  if (e.actor != null) out.actor = e.actor;
  out.source = e.source;
  if (e.data != null) out.data = dropNulls(e.data);
  if (e.correlation_id != null) out.correlation_id = e.correlation_id;
  if (e.request_id != null) out.request_id = e.request_id;
  if (e.trace_id != null) out.trace_id = e.trace_id;
  if (e.metadata != null) out.metadata = e.metadata;
  return out;
}

function dropNulls(o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== null && v !== undefined) out[k] = v;
  return out;
}

/** Parses one outbox entry; undefined when it is not an event we can route (logged by the caller). */
export function parseOutboxEntry(raw: string): OutboxEvent | undefined {
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const e = v as Partial<OutboxEvent>;
  if (typeof e.event_id !== 'string' || typeof e.event_type !== 'string' || typeof e.tenant_id !== 'string') return undefined;
  if (typeof e.timestamp_ms !== 'number') return undefined;
  if (typeof e.category !== 'string') e.category = e.event_type.split('.')[0] ?? '';
  if (typeof e.source !== 'string') e.source = 'cycles-server';
  return e as OutboxEvent;
}

/** The routing-relevant fields of a subscription record (hash fields as stored). */
export interface SubscriptionRoute {
  subscription_id: string;
  owner: string;
  status: string;
  event_types: string[];
  event_categories: string[];
  scope_filter?: string;
}

export function routeFromRecord(owner: string, rec: Record<string, string>): SubscriptionRoute | undefined {
  if (!rec.subscription_id) return undefined;
  return {
    subscription_id: rec.subscription_id,
    owner,
    status: rec.status ?? 'ACTIVE',
    event_types: parseList(rec.event_types),
    event_categories: parseList(rec.event_categories),
    ...(rec.scope_filter !== undefined ? { scope_filter: rec.scope_filter } : {}),
  };
}

function parseList(raw: string | undefined): string[] {
  if (!raw) return [];
  try {
    const v = JSON.parse(raw) as unknown;
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
  } catch {
    return [];
  }
}

const TENANT_CATEGORY_SET = new Set(TENANT_CATEGORIES);
const KNOWN_TYPES = new Set(Object.entries(EVENT_TYPES).flatMap(([c, actions]) => actions.map((a) => `${c}.${a}`)));

/** Whether an event may reach a tenant-owned subscription (fail closed on anything unclassifiable). */
export function tenantAccessible(eventType: string, category: string): boolean {
  const typeCategory = eventType.split('.')[0] ?? '';
  return TENANT_CATEGORY_SET.has(category) && TENANT_CATEGORY_SET.has(typeCategory);
}

export function isKnownEventType(eventType: string): boolean {
  return KNOWN_TYPES.has(eventType) || eventType.startsWith('custom.');
}

/** Scope filter (events digest §2.4): blank = all; `*` = any scoped event; `x/*` = strict children; else exact. */
export function scopeMatches(filter: string | undefined, scope: string | undefined): boolean {
  if (filter === undefined || filter.trim() === '') return true;
  if (scope === undefined || scope.trim() === '') return false;
  if (filter === '*') return true;
  if (filter.endsWith('*')) {
    const prefix = filter.slice(0, -1);
    return scope.startsWith(prefix) && scope.length > prefix.length;
  }
  return scope === filter;
}

/** Types OR categories, then scope, then the ownership boundary; ACTIVE subscriptions only. */
export function subscriptionMatches(sub: SubscriptionRoute, e: { event_type: string; category: string; scope?: string }): boolean {
  if (sub.status !== 'ACTIVE') return false;
  return selects(sub, e);
}

/** The selector part of the match, regardless of status (replay counts use it too). */
export function selects(sub: SubscriptionRoute, e: { event_type: string; category: string; scope?: string }): boolean {
  const bothEmpty = sub.event_types.length === 0 && sub.event_categories.length === 0;
  const selected = bothEmpty || sub.event_types.includes(e.event_type) || sub.event_categories.includes(e.category);
  if (!selected) return false;
  if (!scopeMatches(sub.scope_filter, e.scope)) return false;
  if (sub.owner !== SYSTEM_OWNER && !tenantAccessible(e.event_type, e.category)) return false;
  return true;
}

/** Delivery ids are deterministic per (event, subscription) so a re-run relay creates no duplicate. */
export function liveDeliveryId(eventId: string, subscriptionId: string): string {
  return `del_${createHash('sha256').update(`${eventId}|${subscriptionId}`).digest('hex').slice(0, 16)}`;
}
