--[[
  Commits the actual cost of an ACTIVE reservation: releases the hold and charges the actual on
  every budgeted scope, applying the reservation's overage policy when actual > estimate.

  Input:
    KEYS[1]  tenant record hash      P:{t}:tenant   (its prefix locates the ledgers)
    KEYS[2]  reservation records hash P:{t}:rs
    KEYS[3]  expiry index            P:{t}:exp
    KEYS[4]  outbox stream           P:{t}:outbox

    ARGV[1]  caller tenant ('' for none)     ARGV[2]  idempotency key
    ARGV[3]  payload hash                    ARGV[4]  actual amount
    ARGV[5]  actual unit                     ARGV[6]  metadata JSON or ''
    ARGV[7]  event id base                   ARGV[8]  request id
    ARGV[9]  trace id                        ARGV[10] actor JSON
    ARGV[11] reservation short id

  Output:
    {'OK', now, charged, released}            committed
    {'REPLAY', now, charged, released}        same key and payload as the commit that succeeded
    {<ERROR_CODE>, now, detail...}            NOT_FOUND, FORBIDDEN, IDEMPOTENCY_MISMATCH,
                                              TENANT_CLOSED, RESERVATION_EXPIRED,
                                              RESERVATION_FINALIZED, UNIT_MISMATCH,
                                              BUDGET_EXCEEDED, OVERDRAFT_LIMIT_EXCEEDED,
                                              INTERNAL_ERROR

  Side effects: ledgers (reserved, spent, debt, over_limit), reservation status COMMITTED,
  expiry index entry removed, events commit_overage / debt_incurred / over_limit_entered /
  exhausted.
]]
--- @include "common"
--- @include "reservation"
--- @include "overage"

local now = now_ms()
local short = ARGV[11]
local r = load_reservation(KEYS[2], short)
if not r then return {'NOT_FOUND', now} end
if ARGV[1] ~= '' and ARGV[1] ~= r.tenant then return {'FORBIDDEN', now} end

if r.ckey and r.ckey == ARGV[2] then
  if r.chash ~= ARGV[3] then return {'IDEMPOTENCY_MISMATCH', now} end
  local c, rel = string.match(r.cres, '^([^|]*)|([^|]*)$')
  return {'REPLAY', now, c, rel}
end

local refused = settle_guard(KEYS[1], r, now)
if refused then return refused end
if ARGV[5] ~= r.unit then return {'UNIT_MISMATCH', now, r.unit} end
if now > r.expires + r.grace then return {'RESERVATION_EXPIRED', now} end

local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #'tenant')
local ledgers = held_ledgers(prefix, r)
local E = r.estimate
local A = tonumber(ARGV[4])
local delta = A - E
local ctx = {
  now = now, event_base = ARGV[7], request_id = ARGV[8], trace_id = ARGV[9],
  actor = ARGV[10], tenant = r.tenant,
}

-- Plan per-ledger changes first, apply only when no scope refuses.
local plan = {}
local charged_delta = 0
if delta <= 0 then
  for i, l in ipairs(ledgers) do plan[i] = {spent = A, debt = 0, flag = false} end
  charged_delta = delta
elseif r.policy == 'REJECT' then
  return {'BUDGET_EXCEEDED', now, ledgers[1] and ledgers[1].scope or ''}
else
  plan, charged_delta = plan_overage(ledgers, r.policy, delta, E)
  if not plan then return {'OVERDRAFT_LIMIT_EXCEEDED', now, charged_delta} end
end

for i, l in ipairs(ledgers) do
  local p = plan[i]
  if l.spent + p.spent > MAX_AMOUNT or l.debt + p.debt > MAX_AMOUNT then
    return {'INVALID_REQUEST', now, 'ledger total would exceed 2^53-1 at ' .. l.scope}
  end
end

local debt_incurred = false
for i, l in ipairs(ledgers) do
  local p = plan[i]
  if p.debt > 0 then debt_incurred = true end
  local after = {
    allocated = l.allocated, spent = l.spent + p.spent, reserved = l.reserved - E,
    debt = l.debt + p.debt, overdraft_limit = l.overdraft_limit,
    over_limit = l.over_limit or p.flag,
  }
  after.remaining = after.allocated - after.spent - after.reserved - after.debt
  redis.call('HSET', l.key, 'spent', fmt(after.spent), 'reserved', fmt(after.reserved),
    'debt', fmt(after.debt), 'over_limit', after.over_limit and '1' or '0')
  emit_spend_events(KEYS[4], ctx, l.scope, r.unit, l, after, full_rid(r.tenant, short))
end

local charged = E + charged_delta
local released = 0
if charged < E then released = E - charged end
if A > E then
  emit(KEYS[4], ctx, 'reservation.commit_overage', 'reservation', r.scope_path, jobj({
    'reservation_id', js(full_rid(r.tenant, short)), 'scope', js(r.scope_path), 'unit', js(r.unit),
    'estimated_amount', fmt(E), 'actual_amount', fmt(A), 'charged_amount', fmt(charged),
    'overage', fmt(A - E), 'overage_policy', js(r.policy),
    'debt_incurred', debt_incurred and 'true' or 'false',
  }))
end

update_reservation(KEYS[2], short, r, {
  status = 'COMMITTED', committed = charged, finalized = now, ckey = ARGV[2], chash = ARGV[3],
  cres = fmt(charged) .. '|' .. fmt(released), cmeta = ARGV[6] ~= '' and ARGV[6] or nil,
})
redis.call('ZREM', KEYS[3], short)
return {'OK', now, fmt(charged), fmt(released)}
