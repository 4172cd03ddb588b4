import { Type } from '@sinclair/typebox';
import { FreeObject } from './common.js';
import { UNITS } from '../../domain/amounts.js';
import { PERMISSIONS } from '../../domain/admin.js';

/**
 * Wire schemas of the governance listings, the API-key update and key validation. Query schemas
 * allow unknown parameters (additive-parameter guarantee, e.g. `observe_mode`); enumerated values
 * are checked here, cross-parameter rules (utilization_min ≤ max, trimmed search length) in the
 * domain. List limits are clamped by the domain, except on GET /v1/balances where the reference
 * refuses them.
 */

const enumOf = (values: readonly string[]) => Type.String({ enum: [...values] });
// sort_dir is case-insensitive in the reference.
const SortDir = Type.String({ pattern: '^([aA][sS][cC]|[dD][eE][sS][cC])$' });
const Cursor = Type.String({ maxLength: 2048 });
// Trimmed and checked against 128 characters in the domain; this only bounds the raw text.
const Search = Type.String({ maxLength: 4096 });
const Limit = Type.Integer();

export const TenantListQuery = Type.Object(
  {
    status: Type.Optional(enumOf(['ACTIVE', 'SUSPENDED', 'CLOSED'])),
    parent_tenant_id: Type.Optional(Type.String({ maxLength: 64 })),
    search: Type.Optional(Search),
    sort_by: Type.Optional(enumOf(['tenant_id', 'name', 'status', 'created_at'])),
    sort_dir: Type.Optional(SortDir),
    limit: Type.Optional(Limit),
    cursor: Type.Optional(Cursor),
  },
  { additionalProperties: true },
);

export const BudgetListQuery = Type.Object(
  {
    tenant_id: Type.Optional(Type.String({ maxLength: 64 })),
    scope_prefix: Type.Optional(Type.String({ maxLength: 1024 })),
    unit: Type.Optional(enumOf(UNITS)),
    status: Type.Optional(enumOf(['ACTIVE', 'FROZEN', 'CLOSED'])),
    over_limit: Type.Optional(Type.Boolean()),
    has_debt: Type.Optional(Type.Boolean()),
    utilization_min: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    utilization_max: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    search: Type.Optional(Search),
    sort_by: Type.Optional(enumOf(['tenant_id', 'scope', 'unit', 'status', 'commit_overage_policy', 'utilization', 'debt'])),
    sort_dir: Type.Optional(SortDir),
    limit: Type.Optional(Limit),
    cursor: Type.Optional(Cursor),
  },
  { additionalProperties: true },
);

export const ApiKeyListQuery = Type.Object(
  {
    tenant_id: Type.Optional(Type.String({ maxLength: 64 })),
    status: Type.Optional(enumOf(['ACTIVE', 'REVOKED', 'EXPIRED'])),
    search: Type.Optional(Search),
    sort_by: Type.Optional(enumOf(['key_id', 'name', 'tenant_id', 'status', 'created_at', 'expires_at'])),
    sort_dir: Type.Optional(SortDir),
    limit: Type.Optional(Limit),
    cursor: Type.Optional(Cursor),
  },
  { additionalProperties: true },
);

/** Admin-plane GET /v1/balances; `tenant_id` is accepted and ignored (the key decides). */
export const AdminBalanceQuery = Type.Object(
  {
    tenant_id: Type.Optional(Type.String({ maxLength: 64 })),
    scope_prefix: Type.Optional(Type.String({ maxLength: 1024 })),
    unit: Type.Optional(enumOf(UNITS)),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    cursor: Type.Optional(Cursor),
  },
  { additionalProperties: true },
);

/** PATCH /v1/admin/api-keys/{key_id}: tenant_id, key_prefix, expires_at and status are immutable. */
export const ApiKeyUpdateRequest = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    description: Type.Optional(Type.String({ maxLength: 1024 })),
    permissions: Type.Optional(Type.Array(Type.String({ maxLength: 64 }), { maxItems: PERMISSIONS.length })),
    scope_filter: Type.Optional(Type.Array(Type.String({ maxLength: 256 }), { maxItems: 64 })),
    metadata: Type.Optional(FreeObject),
  },
  { additionalProperties: false },
);

export const ApiKeyValidationRequest = Type.Object(
  { key_secret: Type.String({ minLength: 1, maxLength: 512 }) },
  { additionalProperties: false },
);
