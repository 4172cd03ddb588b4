import { Type } from '@sinclair/typebox';

/** Webhook wire schemas (admin digest §2.5, §2.9; spec WebhookCreateRequest, WebhookUpdateRequest). */

/** Event types are checked against the vocabulary by the domain, which names the bad value. */
const EventTypeList = Type.Array(Type.String({ minLength: 1, maxLength: 128 }), { maxItems: 64 });
const EventCategory = Type.Union(
  ['budget', 'tenant', 'api_key', 'policy', 'reservation', 'system', 'webhook'].map((c) => Type.Literal(c)),
);
const EventCategoryList = Type.Array(EventCategory, { maxItems: 7 });

const Ratio = Type.Number({ minimum: 0, maximum: 1 });
const WindowSeconds = Type.Integer({ minimum: 60, maximum: 86_400 });

export const WebhookThresholdConfig = Type.Object(
  {
    budget_utilization: Type.Optional(Type.Array(Ratio, { maxItems: 32 })),
    burn_rate_multiplier: Type.Optional(Type.Number({ minimum: 1.5, maximum: 1_000_000 })),
    burn_rate_window_seconds: Type.Optional(WindowSeconds),
    denial_rate_threshold: Type.Optional(Ratio),
    expiry_rate_threshold: Type.Optional(Ratio),
    auth_failure_rate_threshold: Type.Optional(Ratio),
    rate_window_seconds: Type.Optional(WindowSeconds),
  },
  { additionalProperties: false },
);

export const WebhookRetryPolicy = Type.Object(
  {
    max_retries: Type.Optional(Type.Integer({ minimum: 0, maximum: 10 })),
    initial_delay_ms: Type.Optional(Type.Integer({ minimum: 100, maximum: 60_000 })),
    backoff_multiplier: Type.Optional(Type.Number({ minimum: 1, maximum: 10 })),
    max_delay_ms: Type.Optional(Type.Integer({ minimum: 1000, maximum: 3_600_000 })),
  },
  { additionalProperties: false },
);

const Headers = Type.Record(Type.String({ minLength: 1, maxLength: 256 }), Type.String({ maxLength: 4096 }), { maxProperties: 32 });

const common = {
  name: Type.Optional(Type.String({ maxLength: 256 })),
  description: Type.Optional(Type.String({ maxLength: 1024 })),
  url: Type.String({ minLength: 1, maxLength: 2048 }),
  event_categories: Type.Optional(EventCategoryList),
  scope_filter: Type.Optional(Type.String({ maxLength: 1024 })),
  thresholds: Type.Optional(WebhookThresholdConfig),
  signing_secret: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })),
  headers: Type.Optional(Headers),
  retry_policy: Type.Optional(WebhookRetryPolicy),
  disable_after_failures: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
  metadata: Type.Optional(Type.Object({}, { additionalProperties: true })),
};

export const WebhookCreateRequest = Type.Object(
  { ...common, event_types: Type.Array(Type.String({ minLength: 1, maxLength: 128 }), { minItems: 1, maxItems: 64 }) },
  { additionalProperties: false },
);

export const WebhookUpdateRequest = Type.Object(
  {
    ...common,
    url: Type.Optional(common.url),
    event_types: Type.Optional(EventTypeList),
    status: Type.Optional(Type.Union([Type.Literal('ACTIVE'), Type.Literal('PAUSED')])),
  },
  { additionalProperties: false },
);

export const WebhookIdParams = Type.Object({ subscription_id: Type.String({ minLength: 1, maxLength: 256 }) });

/** Admin create: `?tenant_id=` names the owner; without it the subscription is `__system__`'s. */
export const WebhookCreateQuery = Type.Object(
  { tenant_id: Type.Optional(Type.String({ maxLength: 64 })) },
  { additionalProperties: true },
);

/** status and event_type are plain strings (an unknown value matches nothing, as the reference). */
export const AdminWebhookListQuery = Type.Object(
  {
    tenant_id: Type.Optional(Type.String({ maxLength: 64 })),
    status: Type.Optional(Type.String({ maxLength: 32 })),
    event_type: Type.Optional(Type.String({ maxLength: 128 })),
    search: Type.Optional(Type.String({ maxLength: 1024 })),
    cursor: Type.Optional(Type.String({ maxLength: 1024 })),
    limit: Type.Optional(Type.Integer()),
  },
  { additionalProperties: true },
);

export const TenantWebhookListQuery = Type.Object(
  {
    tenant: Type.Optional(Type.String({ maxLength: 64 })),
    status: Type.Optional(Type.String({ maxLength: 32 })),
    cursor: Type.Optional(Type.String({ maxLength: 1024 })),
    limit: Type.Optional(Type.Integer()),
  },
  { additionalProperties: true },
);

export const WebhookSecurityConfig = Type.Object(
  {
    blocked_cidr_ranges: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 256 })),
    allowed_url_patterns: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 2048 }), { maxItems: 256 })),
    allow_http: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
