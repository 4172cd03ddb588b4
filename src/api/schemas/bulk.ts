import { Type, type Static } from '@sinclair/typebox';
import { AmountSchema } from './common.js';
import { UNITS } from '../../domain/amounts.js';

/**
 * Bulk actions (admin digest §2.11). Filters are closed objects; the "at least one property"
 * rule of the tenant filter, the trimmed search length and the budget payload rules (amount
 * required, spent only with RESET_SPENT) are checked in the domain, in the order the digest gives.
 */

const enumOf = (values: readonly string[]) => Type.String({ enum: [...values] });
// Trimmed and checked against 128 characters in the domain; this only bounds the raw text.
const Search = Type.String({ maxLength: 4096 });
const BulkIdempotencyKey = Type.String({ minLength: 1, maxLength: 128 });
const ExpectedCount = Type.Integer({ minimum: 0 });

export const TenantBulkActionRequest = Type.Object(
  {
    filter: Type.Object(
      {
        status: Type.Optional(enumOf(['ACTIVE', 'SUSPENDED', 'CLOSED'])),
        parent_tenant_id: Type.Optional(Type.String({ maxLength: 64 })),
        search: Type.Optional(Search),
      },
      { additionalProperties: false },
    ),
    action: enumOf(['SUSPEND', 'REACTIVATE', 'CLOSE']),
    expected_count: Type.Optional(ExpectedCount),
    idempotency_key: BulkIdempotencyKey,
  },
  { additionalProperties: false },
);
export type TenantBulkActionWire = Static<typeof TenantBulkActionRequest>;

export const BudgetBulkActionRequest = Type.Object(
  {
    filter: Type.Object(
      {
        tenant_id: Type.String({ maxLength: 64 }),
        scope_prefix: Type.Optional(Type.String({ maxLength: 1024 })),
        unit: Type.Optional(enumOf(UNITS)),
        status: Type.Optional(enumOf(['ACTIVE', 'FROZEN', 'CLOSED'])),
        over_limit: Type.Optional(Type.Boolean()),
        has_debt: Type.Optional(Type.Boolean()),
        utilization_min: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
        utilization_max: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
        search: Type.Optional(Search),
      },
      { additionalProperties: false },
    ),
    action: enumOf(['CREDIT', 'DEBIT', 'RESET', 'RESET_SPENT', 'REPAY_DEBT']),
    amount: Type.Optional(AmountSchema),
    spent: Type.Optional(AmountSchema),
    reason: Type.Optional(Type.String({ maxLength: 512 })),
    expected_count: Type.Optional(ExpectedCount),
    idempotency_key: BulkIdempotencyKey,
  },
  { additionalProperties: false },
);
export type BudgetBulkActionWire = Static<typeof BudgetBulkActionRequest>;

export const WebhookBulkActionRequest = Type.Object(
  {
    filter: Type.Object(
      {
        tenant_id: Type.Optional(Type.String({ maxLength: 64 })),
        status: Type.Optional(enumOf(['ACTIVE', 'PAUSED', 'DISABLED'])),
        // Checked against the event-type vocabulary in the domain, which names the bad value.
        event_type: Type.Optional(Type.String({ maxLength: 128 })),
        search: Type.Optional(Search),
      },
      { additionalProperties: false },
    ),
    action: enumOf(['PAUSE', 'RESUME', 'DELETE']),
    expected_count: Type.Optional(ExpectedCount),
    idempotency_key: BulkIdempotencyKey,
  },
  { additionalProperties: false },
);
export type WebhookBulkActionWire = Static<typeof WebhookBulkActionRequest>;
