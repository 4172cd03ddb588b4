import { Type, type Static } from '@sinclair/typebox';
import { AmountSchema, FreeObject, IdempotencyKey, OveragePolicy, SignedAmountSchema, Unit } from './common.js';

/** Runtime-plane wire schemas, exactly the protocol's request and response shapes. */

const SubjectValue = Type.String({ minLength: 1, maxLength: 128, pattern: '^[a-zA-Z0-9_.-]+$' });

export const SubjectSchema = Type.Object(
  {
    tenant: Type.Optional(SubjectValue),
    workspace: Type.Optional(SubjectValue),
    app: Type.Optional(SubjectValue),
    workflow: Type.Optional(SubjectValue),
    agent: Type.Optional(SubjectValue),
    toolset: Type.Optional(SubjectValue),
    dimensions: Type.Optional(
      Type.Record(Type.String({ maxLength: 128 }), Type.String({ maxLength: 256 }), { maxProperties: 16 }),
    ),
  },
  {
    additionalProperties: false,
    minProperties: 1,
    anyOf: ['tenant', 'workspace', 'app', 'workflow', 'agent', 'toolset'].map((k) => ({ required: [k] })),
  },
);
export type SubjectWire = Static<typeof SubjectSchema>;

export const ActionSchema = Type.Object(
  {
    kind: Type.String({ minLength: 1, maxLength: 64 }),
    name: Type.String({ minLength: 1, maxLength: 256 }),
    tags: Type.Optional(Type.Array(Type.String({ maxLength: 64 }), { maxItems: 10 })),
  },
  { additionalProperties: false },
);

/** Fields a reservation request and a decide request share. */
const evaluationFields = {
  idempotency_key: IdempotencyKey,
  subject: SubjectSchema,
  action: ActionSchema,
  estimate: AmountSchema,
};

export const ReservationCreateRequest = Type.Object(
  {
    ...evaluationFields,
    ttl_ms: Type.Optional(Type.Integer({ minimum: 1000, maximum: 86_400_000 })),
    grace_period_ms: Type.Optional(Type.Integer({ minimum: 0, maximum: 60_000 })),
    overage_policy: Type.Optional(OveragePolicy),
    dry_run: Type.Optional(Type.Boolean()),
    metadata: Type.Optional(FreeObject),
  },
  { additionalProperties: false },
);
export type ReservationCreateBody = Static<typeof ReservationCreateRequest>;

export const DecisionRequest = Type.Object(
  {
    ...evaluationFields,
    metadata: Type.Optional(FreeObject),
  },
  { additionalProperties: false },
);
export type DecisionBody = Static<typeof DecisionRequest>;

export const StandardMetrics = Type.Object(
  {
    tokens_input: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
    tokens_output: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
    latency_ms: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
    model_version: Type.Optional(Type.String({ maxLength: 128 })),
    custom: Type.Optional(FreeObject),
  },
  { additionalProperties: false },
);

export const CommitRequest = Type.Object(
  {
    idempotency_key: IdempotencyKey,
    actual: AmountSchema,
    metrics: Type.Optional(StandardMetrics),
    metadata: Type.Optional(FreeObject),
  },
  { additionalProperties: false },
);
export type CommitBody = Static<typeof CommitRequest>;

export const ReleaseRequest = Type.Object(
  {
    idempotency_key: IdempotencyKey,
    reason: Type.Optional(Type.String({ maxLength: 256 })),
  },
  { additionalProperties: false },
);
export type ReleaseBody = Static<typeof ReleaseRequest>;

export const ReservationExtendRequest = Type.Object(
  {
    idempotency_key: IdempotencyKey,
    extend_by_ms: Type.Integer({ minimum: 1, maximum: 86_400_000 }),
    metadata: Type.Optional(FreeObject),
  },
  { additionalProperties: false },
);
export type ExtendBody = Static<typeof ReservationExtendRequest>;

export const EventCreateRequest = Type.Object(
  {
    idempotency_key: IdempotencyKey,
    subject: SubjectSchema,
    action: ActionSchema,
    actual: AmountSchema,
    overage_policy: Type.Optional(OveragePolicy),
    metrics: Type.Optional(StandardMetrics),
    client_time_ms: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
    metadata: Type.Optional(FreeObject),
  },
  { additionalProperties: false },
);
export type EventBody = Static<typeof EventCreateRequest>;

export const ReservationIdParams = Type.Object({
  reservation_id: Type.String({ minLength: 1, maxLength: 128 }),
});

export const BalanceSchema = Type.Object(
  {
    scope: Type.String(),
    scope_path: Type.String(),
    remaining: SignedAmountSchema,
    reserved: Type.Optional(AmountSchema),
    spent: Type.Optional(AmountSchema),
    allocated: Type.Optional(AmountSchema),
    debt: Type.Optional(AmountSchema),
    overdraft_limit: Type.Optional(AmountSchema),
    is_over_limit: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

export const BalancesQuery = Type.Object(
  {
    tenant: Type.Optional(Type.String({ maxLength: 128 })),
    workspace: Type.Optional(Type.String({ maxLength: 128 })),
    app: Type.Optional(Type.String({ maxLength: 128 })),
    workflow: Type.Optional(Type.String({ maxLength: 128 })),
    agent: Type.Optional(Type.String({ maxLength: 128 })),
    toolset: Type.Optional(Type.String({ maxLength: 128 })),
    include_children: Type.Optional(Type.Boolean()),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200 })),
    cursor: Type.Optional(Type.String({ maxLength: 1024 })),
  },
  { additionalProperties: true },
);
export type BalancesQueryT = Static<typeof BalancesQuery>;

export const ReservationListQuery = Type.Object(
  {
    idempotency_key: Type.Optional(Type.String({ maxLength: 256 })),
    status: Type.Optional(Type.Union(['ACTIVE', 'COMMITTED', 'RELEASED', 'EXPIRED'].map((s) => Type.Literal(s)))),
    tenant: Type.Optional(Type.String({ maxLength: 128 })),
    workspace: Type.Optional(Type.String({ maxLength: 128 })),
    app: Type.Optional(Type.String({ maxLength: 128 })),
    workflow: Type.Optional(Type.String({ maxLength: 128 })),
    agent: Type.Optional(Type.String({ maxLength: 128 })),
    toolset: Type.Optional(Type.String({ maxLength: 128 })),
    from: Type.Optional(Type.String({ maxLength: 64 })),
    to: Type.Optional(Type.String({ maxLength: 64 })),
    expires_from: Type.Optional(Type.String({ maxLength: 64 })),
    expires_to: Type.Optional(Type.String({ maxLength: 64 })),
    finalized_from: Type.Optional(Type.String({ maxLength: 64 })),
    finalized_to: Type.Optional(Type.String({ maxLength: 64 })),
    sort_by: Type.Optional(
      Type.Union(
        ['reservation_id', 'tenant', 'scope_path', 'status', 'reserved', 'created_at_ms', 'expires_at_ms'].map((s) => Type.Literal(s)),
      ),
    ),
    sort_dir: Type.Optional(Type.Union([Type.Literal('asc'), Type.Literal('desc')])),
    include: Type.Optional(Type.String({ maxLength: 256 })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200 })),
    cursor: Type.Optional(Type.String({ maxLength: 2048 })),
  },
  { additionalProperties: true },
);
export type ReservationListQueryT = Static<typeof ReservationListQuery>;

export { Unit };
