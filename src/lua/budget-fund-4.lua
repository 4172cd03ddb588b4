--[[
  Funding operations on one ledger: CREDIT, DEBIT, RESET, RESET_SPENT, REPAY_DEBT, atomic with
  the runtime's reservations (same hash slot), optionally idempotent by key.

  Input:
    KEYS[1]  tenant record hash      P:{t}:tenant
    KEYS[2]  ledger hash             P:{t}:b:<scope>:<unit>
    KEYS[3]  idempotency record      P:{t}:i:fund:<key>   (ARGV[5] = '' when no key was sent)
    KEYS[4]  outbox stream           P:{t}:outbox
    ARGV[1]  operation   ARGV[2] amount   ARGV[3] spent override or ''   ARGV[4] payload hash
    ARGV[5]  idempotency key or ''   ARGV[6] idempotency TTL ms   ARGV[7] updated_at (ms)
    ARGV[8]  event id base   ARGV[9] request id   ARGV[10] trace id   ARGV[11] actor JSON
    ARGV[12] tenant id       ARGV[13] scope       ARGV[14] unit       ARGV[15] reason or ''
    ARGV[16] correlation id or '' (stamped on the events)

  Output:
    {'OK'|'REPLAY', prev_allocated, allocated, prev_remaining, remaining, prev_debt, debt,
     prev_spent, spent}
    | {'IDEMPOTENCY_MISMATCH'} | {'TENANT_CLOSED'} | {'BUDGET_NOT_FOUND'} | {'BUDGET_FROZEN'}
    | {'BUDGET_CLOSED'} | {'BUDGET_EXCEEDED'} | {'INVALID_REQUEST', message}

  remaining is derived (allocated - spent - reserved - debt), so the ledger invariant holds by
  construction; is_over_limit is recomputed as debt > overdraft_limit.
]]
--- @include "common"

if ARGV[5] ~= '' then
  local idem = redis.call('HMGET', KEYS[3], 'h', 'r')
  if idem[1] then
    if idem[1] ~= ARGV[4] then return {'IDEMPOTENCY_MISMATCH'} end
    local out = {'REPLAY'}
    for f in string.gmatch(idem[2], '[^|]+') do out[#out + 1] = f end
    return out
  end
end

local tstatus = redis.call('HGET', KEYS[1], 'status')
if tstatus == 'CLOSED' then return {'TENANT_CLOSED'} end
local l = load_ledger(KEYS[2])
if not l then return {'BUDGET_NOT_FOUND'} end
if l.status == 'FROZEN' then return {'BUDGET_FROZEN'} end
if l.status == 'CLOSED' then return {'BUDGET_CLOSED'} end

local op = ARGV[1]
local x = tonumber(ARGV[2])
local a, s, d = l.allocated, l.spent, l.debt
if op == 'CREDIT' then
  a = a + x
elseif op == 'DEBIT' then
  if l.remaining < x then return {'BUDGET_EXCEEDED'} end
  a = a - x
elseif op == 'RESET' then
  a = x
elseif op == 'RESET_SPENT' then
  a = x
  s = tonumber(ARGV[3]) or 0
elseif op == 'REPAY_DEBT' then
  local repaid = math.min(d, x)
  d = d - repaid
  a = a + (x - repaid)
else
  return {'INVALID_REQUEST', 'unknown operation ' .. op}
end
local remaining = a - s - l.reserved - d
if a > MAX_AMOUNT or remaining > MAX_AMOUNT or remaining < -MAX_AMOUNT then
  return {'INVALID_REQUEST', 'ledger total would exceed 2^53-1'}
end

local over = d > l.overdraft_limit
redis.call('HSET', KEYS[2], 'allocated', fmt(a), 'spent', fmt(s), 'debt', fmt(d),
  'over_limit', over and '1' or '0', 'updated_at', ARGV[7])
local result = {fmt(l.allocated), fmt(a), fmt(l.remaining), fmt(remaining), fmt(l.debt), fmt(d),
  fmt(l.spent), fmt(s)}
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[3], 'h', ARGV[4], 'r', table.concat(result, '|'))
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[6]))
end

local types = { CREDIT = 'budget.funded', DEBIT = 'budget.debited', RESET = 'budget.reset',
  RESET_SPENT = 'budget.reset_spent', REPAY_DEBT = 'budget.debt_repaid' }
local ctx = { now = now_ms(), event_base = ARGV[8], request_id = ARGV[9], trace_id = ARGV[10],
  actor = ARGV[11], tenant = ARGV[12], source = 'cycles-admin', correlation_id = ARGV[16] }
emit(KEYS[4], ctx, types[op], 'budget', ARGV[13], jobj({
  'scope', js(ARGV[13]), 'unit', js(ARGV[14]), 'operation', js(op),
  'previous_allocated', fmt(l.allocated), 'new_allocated', fmt(a),
  'previous_remaining', fmt(l.remaining), 'new_remaining', fmt(remaining),
  'previous_debt', fmt(l.debt), 'new_debt', fmt(d),
  'previous_spent', fmt(l.spent), 'new_spent', fmt(s),
  'reason', ARGV[15] ~= '' and js(ARGV[15]) or nil,
  'spent_override_provided', op == 'RESET_SPENT' and (ARGV[3] ~= '' and 'true' or 'false') or nil,
}))
if l.over_limit and not over then
  emit(KEYS[4], ctx, 'budget.over_limit_exited', 'budget', ARGV[13], jobj({
    'scope', js(ARGV[13]), 'unit', js(ARGV[14]), 'debt', fmt(d),
    'overdraft_limit', fmt(l.overdraft_limit), 'is_over_limit', 'false',
  }))
end
return {'OK', unpack(result)}
