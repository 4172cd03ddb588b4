/**
 * The closed list of protocol error codes and the one table that maps each to its HTTP status.
 * Runtime codes come from the runtime protocol's ErrorCode enum; the governance plane adds its
 * own (TENANT_NOT_FOUND, DUPLICATE_RESOURCE, ...). Handlers never pick a status themselves.
 */
export const ERROR_STATUS = {
  INVALID_REQUEST: 400,
  UNIT_MISMATCH: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  INSUFFICIENT_PERMISSIONS: 403,
  NOT_FOUND: 404,
  TENANT_NOT_FOUND: 404,
  BUDGET_NOT_FOUND: 404,
  BUDGET_EXCEEDED: 409,
  BUDGET_FROZEN: 409,
  BUDGET_CLOSED: 409,
  OVERDRAFT_LIMIT_EXCEEDED: 409,
  DEBT_OUTSTANDING: 409,
  RESERVATION_FINALIZED: 409,
  IDEMPOTENCY_MISMATCH: 409,
  COUNT_MISMATCH: 409,
  MAX_EXTENSIONS_EXCEEDED: 409,
  TENANT_CLOSED: 409,
  DUPLICATE_RESOURCE: 409,
  KEY_REVOKED: 409,
  WEBHOOK_NOT_FOUND: 404,
  WEBHOOK_URL_INVALID: 400,
  RESERVATION_EXPIRED: 410,
  LIMIT_EXCEEDED: 429,
  INTERNAL_ERROR: 500,
  SERVICE_UNAVAILABLE: 503,
  EVENT_NOT_FOUND: 404,
  REPLAY_IN_PROGRESS: 409,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** A protocol error: the code decides the status unless a route has a documented exception. */
export class CyclesError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, status?: number) {
    super(message);
    this.code = code;
    this.status = status ?? ERROR_STATUS[code];
    if (details !== undefined) this.details = details;
  }
}

export function isErrorCode(value: string): value is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERROR_STATUS, value);
}
