import { Type } from '@sinclair/typebox';
import { AmountSchema, FreeObject, OveragePolicy, Unit } from './common.js';
import { PERMISSIONS } from '../../domain/admin.js';

/** Governance-plane request schemas (the subset this release serves). */

const TenantId = Type.String({ pattern: '^[a-z0-9-]+$', minLength: 3, maxLength: 64 });
const StringMap = Type.Record(Type.String(), Type.String(), { maxProperties: 32 });

export const TenantCreateRequest = Type.Object(
  {
    tenant_id: TenantId,
    name: Type.String({ minLength: 1, maxLength: 256 }),
    parent_tenant_id: Type.Optional(Type.String({ maxLength: 64 })),
    metadata: Type.Optional(StringMap),
    default_commit_overage_policy: Type.Optional(OveragePolicy),
    default_reservation_ttl_ms: Type.Optional(Type.Integer({ minimum: 1000, maximum: 86_400_000 })),
    max_reservation_ttl_ms: Type.Optional(Type.Integer({ minimum: 1000, maximum: 86_400_000 })),
    max_reservation_extensions: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000 })),
    reservation_expiry_policy: Type.Optional(
      Type.Union([Type.Literal('AUTO_RELEASE'), Type.Literal('MANUAL_CLEANUP'), Type.Literal('GRACE_ONLY')]),
    ),
  },
  { additionalProperties: false },
);

export const TenantUpdateRequest = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    status: Type.Optional(Type.Union([Type.Literal('ACTIVE'), Type.Literal('SUSPENDED'), Type.Literal('CLOSED')])),
    metadata: Type.Optional(StringMap),
    default_commit_overage_policy: Type.Optional(OveragePolicy),
    default_reservation_ttl_ms: Type.Optional(Type.Integer({ minimum: 1000, maximum: 86_400_000 })),
    max_reservation_ttl_ms: Type.Optional(Type.Integer({ minimum: 1000, maximum: 86_400_000 })),
    max_reservation_extensions: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000 })),
  },
  { additionalProperties: false },
);

export const TenantIdParams = Type.Object({ tenant_id: Type.String({ minLength: 1, maxLength: 64 }) });

export const ApiKeyCreateRequest = Type.Object(
  {
    tenant_id: Type.String({ minLength: 1, maxLength: 64 }),
    name: Type.String({ minLength: 1, maxLength: 256 }),
    description: Type.Optional(Type.String({ maxLength: 1024 })),
    permissions: Type.Optional(Type.Array(Type.String({ maxLength: 64 }), { maxItems: PERMISSIONS.length })),
    scope_filter: Type.Optional(Type.Array(Type.String({ maxLength: 256 }), { maxItems: 64 })),
    expires_at: Type.Optional(Type.String({ maxLength: 64 })),
    metadata: Type.Optional(FreeObject),
  },
  { additionalProperties: false },
);

export const KeyIdParams = Type.Object({ key_id: Type.String({ minLength: 1, maxLength: 128 }) });
export const RevokeQuery = Type.Object({ reason: Type.Optional(Type.String({ maxLength: 512 })) }, { additionalProperties: true });

export const BudgetCreateRequest = Type.Object(
  {
    tenant_id: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    scope: Type.String({ minLength: 1, maxLength: 1024 }),
    unit: Unit,
    allocated: AmountSchema,
    overdraft_limit: Type.Optional(AmountSchema),
    commit_overage_policy: Type.Optional(OveragePolicy),
    rollover_policy: Type.Optional(Type.Union([Type.Literal('NONE'), Type.Literal('CARRY_FORWARD'), Type.Literal('CAP_AT_ALLOCATED')])),
    period_start: Type.Optional(Type.String({ maxLength: 64 })),
    period_end: Type.Optional(Type.String({ maxLength: 64 })),
    metadata: Type.Optional(FreeObject),
  },
  { additionalProperties: false },
);

export const BudgetQuery = Type.Object(
  {
    scope: Type.String({ minLength: 1, maxLength: 1024 }),
    unit: Unit,
    tenant_id: Type.Optional(Type.String({ maxLength: 64 })),
  },
  { additionalProperties: true },
);

export const BudgetUpdateRequest = Type.Object(
  {
    overdraft_limit: Type.Optional(AmountSchema),
    commit_overage_policy: Type.Optional(OveragePolicy),
    metadata: Type.Optional(FreeObject),
  },
  { additionalProperties: false },
);

export const BudgetFundingRequest = Type.Object(
  {
    operation: Type.Union(['CREDIT', 'DEBIT', 'RESET', 'REPAY_DEBT', 'RESET_SPENT'].map((o) => Type.Literal(o))),
    amount: AmountSchema,
    spent: Type.Optional(AmountSchema),
    reason: Type.Optional(Type.String({ maxLength: 512 })),
    idempotency_key: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    metadata: Type.Optional(FreeObject),
  },
  { additionalProperties: false },
);

export const BudgetStatusRequest = Type.Object(
  {
    reason: Type.Optional(Type.String({ maxLength: 512 })),
    metadata: Type.Optional(FreeObject),
  },
  { additionalProperties: false },
);

export const AuditQuery = Type.Object(
  {
    tenant_id: Type.Optional(Type.String({ maxLength: 128 })),
    key_id: Type.Optional(Type.String({ maxLength: 128 })),
    // Comma lists of at most 25 values each (checked after splitting, in the domain).
    operation: Type.Optional(Type.String({ maxLength: 32_768 })),
    resource_type: Type.Optional(Type.String({ maxLength: 4096 })),
    error_code: Type.Optional(Type.String({ maxLength: 4096 })),
    error_code_exclude: Type.Optional(Type.String({ maxLength: 4096 })),
    resource_id: Type.Optional(Type.String({ maxLength: 256 })),
    request_id: Type.Optional(Type.String({ maxLength: 128 })),
    trace_id: Type.Optional(Type.String({ maxLength: 64 })),
    status: Type.Optional(Type.Integer({ minimum: 100, maximum: 599 })),
    status_min: Type.Optional(Type.Integer({ minimum: 100, maximum: 599 })),
    status_max: Type.Optional(Type.Integer({ minimum: 100, maximum: 599 })),
    from: Type.Optional(Type.String({ maxLength: 64 })),
    to: Type.Optional(Type.String({ maxLength: 64 })),
    search: Type.Optional(Type.String({ maxLength: 1024 })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    cursor: Type.Optional(Type.String({ maxLength: 1024 })),
  },
  { additionalProperties: true },
);
