import { Type } from '@sinclair/typebox';
import { MAX_AMOUNT } from '../../domain/amounts.js';
import { OveragePolicy } from './common.js';

/** Policy wire schemas (admin digest §2.3; spec Policy, PolicyCreateRequest, updatePolicy). */

const Count = Type.Integer({ minimum: 0, maximum: MAX_AMOUNT });
const Priority = Type.Integer({ minimum: 0, maximum: 2_147_483_647 });
const Ttl = Type.Integer({ minimum: 1000, maximum: 86_400_000 });
const DateTime = Type.String({ minLength: 1, maxLength: 64 });
const ToolList = Type.Array(Type.String({ maxLength: 256 }));

export const Caps = Type.Object(
  {
    max_tokens: Type.Optional(Count),
    max_steps_remaining: Type.Optional(Count),
    tool_allowlist: Type.Optional(ToolList),
    tool_denylist: Type.Optional(ToolList),
    cooldown_ms: Type.Optional(Count),
  },
  { additionalProperties: false },
);

export const ReservationTtlOverride = Type.Object(
  {
    default_ttl_ms: Type.Optional(Ttl),
    max_ttl_ms: Type.Optional(Ttl),
    max_extensions: Type.Optional(Count),
  },
  { additionalProperties: false },
);

export const RateLimits = Type.Object(
  {
    max_reservations_per_minute: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_AMOUNT })),
    max_commits_per_minute: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_AMOUNT })),
  },
  { additionalProperties: false },
);

const settings = {
  description: Type.Optional(Type.String({ maxLength: 1024 })),
  priority: Type.Optional(Priority),
  caps: Type.Optional(Caps),
  commit_overage_policy: Type.Optional(OveragePolicy),
  reservation_ttl_override: Type.Optional(ReservationTtlOverride),
  rate_limits: Type.Optional(RateLimits),
  effective_from: Type.Optional(DateTime),
  effective_until: Type.Optional(DateTime),
};

export const PolicyCreateRequest = Type.Object(
  {
    tenant_id: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    name: Type.String({ minLength: 1, maxLength: 256 }),
    scope_pattern: Type.String({ minLength: 1, maxLength: 1024 }),
    ...settings,
  },
  { additionalProperties: false },
);

/** scope_pattern is accepted by the schema only so the domain can say it is immutable. */
export const PolicyUpdateRequest = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    status: Type.Optional(Type.Union([Type.Literal('ACTIVE'), Type.Literal('DISABLED')])),
    scope_pattern: Type.Optional(Type.Unknown()),
    ...settings,
  },
  { additionalProperties: false },
);

export const PolicyIdParams = Type.Object({ policy_id: Type.String({ minLength: 1, maxLength: 128 }) });

/** Unknown parameters (v0.1.26 has_action_quotas, references_action_kind) are ignored. */
export const PolicyListQuery = Type.Object(
  {
    tenant_id: Type.Optional(Type.String({ maxLength: 64 })),
    scope_pattern: Type.Optional(Type.String({ maxLength: 1024 })),
    status: Type.Optional(Type.Union([Type.Literal('ACTIVE'), Type.Literal('DISABLED')])),
    cursor: Type.Optional(Type.String({ maxLength: 1024 })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
  },
  { additionalProperties: true },
);
