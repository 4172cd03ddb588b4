/**
 * Amounts are integers. Node and Redis Lua both compute in IEEE doubles, so every amount and
 * every ledger total is kept within ±(2^53 − 1); anything that would leave that range is refused
 * rather than rounded.
 */
export const MAX_AMOUNT = Number.MAX_SAFE_INTEGER;

export const UNITS = ['USD_MICROCENTS', 'TOKENS', 'CREDITS', 'RISK_POINTS'] as const;
export type Unit = (typeof UNITS)[number];

export const OVERAGE_POLICIES = ['REJECT', 'ALLOW_IF_AVAILABLE', 'ALLOW_WITH_OVERDRAFT'] as const;
export type OveragePolicy = (typeof OVERAGE_POLICIES)[number];

export interface Amount {
  unit: Unit;
  amount: number;
}

export function isSafeAmount(n: number): boolean {
  return Number.isSafeInteger(n);
}
