import { Type, type Static } from '@sinclair/typebox';
import { MAX_AMOUNT, UNITS, OVERAGE_POLICIES } from '../../domain/amounts.js';

/** Wire schemas shared by the runtime and admin planes (snake_case, the protocol's shapes). */

export const Unit = Type.Union(UNITS.map((u) => Type.Literal(u)));
export const OveragePolicy = Type.Union(OVERAGE_POLICIES.map((p) => Type.Literal(p)));

export const AmountSchema = Type.Object(
  {
    unit: Unit,
    amount: Type.Integer({ minimum: 0, maximum: MAX_AMOUNT }),
  },
  { additionalProperties: false },
);
export type AmountWire = Static<typeof AmountSchema>;

export const SignedAmountSchema = Type.Object(
  { unit: Unit, amount: Type.Integer({ minimum: -MAX_AMOUNT, maximum: MAX_AMOUNT }) },
  { additionalProperties: false },
);

export const IdempotencyKey = Type.String({ minLength: 1, maxLength: 256 });

/** Free-form object (metadata); bounded by the body size limit. */
export const FreeObject = Type.Object({}, { additionalProperties: true });

export const ErrorResponseSchema = Type.Object(
  {
    error: Type.String(),
    message: Type.String(),
    request_id: Type.String(),
    trace_id: Type.Optional(Type.String()),
    details: Type.Optional(FreeObject),
  },
  { additionalProperties: false },
);
