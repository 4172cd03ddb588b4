--[[
  Applies a direct debit (POST /v1/events): charges `actual` on every budgeted derived scope
  with no reservation, under the request's overage policy.

  Input:
    KEYS[1]  tenant record hash      P:{t}:tenant
    KEYS[2]  idempotency record      P:{t}:i:event:<key>
    KEYS[3]  outbox stream           P:{t}:outbox
    KEYS[4]  scope -> units hash     P:{t}:bunits
    KEYS[5..] ledger of each derived scope in the requested unit, canonical order

    ARGV[1]  event id                ARGV[2]  payload hash
    ARGV[3]  actual amount           ARGV[4]  unit
    ARGV[5]  requested policy ('' = tenant default or ALLOW_IF_AVAILABLE)
    ARGV[6]  scope path              ARGV[7]  idempotency TTL, ms
    ARGV[8]  event id base           ARGV[9]  request id
    ARGV[10] trace id                ARGV[11] actor JSON
    ARGV[12] tenant id

  Output:
    {'OK', now, event_id, charged}  /  {'REPLAY', now, event_id, charged}  /  {<ERROR>, now, ...}
    Errors: IDEMPOTENCY_MISMATCH, TENANT_CLOSED, BUDGET_FROZEN, BUDGET_CLOSED, UNIT_MISMATCH,
    NOT_FOUND, BUDGET_EXCEEDED, OVERDRAFT_LIMIT_EXCEEDED, INTERNAL_ERROR.

  Debt and over-limit flags do not block a direct debit (they block reservations only).
]]
--- @include "common"
--- @include "overage"

local now = now_ms()
local idem = redis.call('HMGET', KEYS[2], 'h', 'r')
if idem[1] then
  if idem[1] ~= ARGV[2] then return {'IDEMPOTENCY_MISMATCH', now} end
  local id, charged = string.match(idem[2], '^([^|]*)|([^|]*)$')
  return {'REPLAY', now, id, charged}
end

local tstate = tenant_state(KEYS[1])
if tstate == 'MALFORMED' then return {'INTERNAL_ERROR', now, 'tenant record is malformed'} end
if tstate == 'CLOSED' then return {'TENANT_CLOSED', now} end

local A = tonumber(ARGV[3])
local unit = ARGV[4]
local scopes = prefixes(ARGV[6])
local ledgers = {}
for i = 1, #scopes do
  local l = load_ledger(KEYS[4 + i])
  if l then
    l.scope = scopes[i]
    ledgers[#ledgers + 1] = l
    if l.status == 'FROZEN' then return {'BUDGET_FROZEN', now, l.scope} end
    if l.status == 'CLOSED' then return {'BUDGET_CLOSED', now, l.scope} end
  end
end
if #ledgers == 0 then
  for i = 1, #scopes do
    local units = redis.call('HGET', KEYS[4], scopes[i])
    if units and units ~= '' then return {'UNIT_MISMATCH', now, scopes[i], units} end
  end
  return {'NOT_FOUND', now, ARGV[6]}
end

local policy = ARGV[5]
if policy == '' then policy = redis.call('HGET', KEYS[1], 'default_commit_overage_policy') or 'ALLOW_IF_AVAILABLE' end

local plan = {}
local eff = A
if policy == 'REJECT' then
  for i, l in ipairs(ledgers) do
    if l.remaining < A then return {'BUDGET_EXCEEDED', now, l.scope, fmt(l.remaining)} end
    plan[i] = {spent = A, debt = 0, flag = false}
  end
else
  plan, eff = plan_overage(ledgers, policy, A, 0)
  if not plan then return {'OVERDRAFT_LIMIT_EXCEEDED', now, eff} end
end

for i, l in ipairs(ledgers) do
  if l.spent + plan[i].spent > MAX_AMOUNT or l.debt + plan[i].debt > MAX_AMOUNT then
    return {'INVALID_REQUEST', now, 'ledger total would exceed 2^53-1 at ' .. l.scope}
  end
end

local ctx = {
  now = now, event_base = ARGV[8], request_id = ARGV[9], trace_id = ARGV[10],
  actor = ARGV[11], tenant = ARGV[12],
}
for i, l in ipairs(ledgers) do
  local p = plan[i]
  local after = {
    allocated = l.allocated, spent = l.spent + p.spent, reserved = l.reserved,
    debt = l.debt + p.debt, overdraft_limit = l.overdraft_limit, over_limit = l.over_limit or p.flag,
  }
  after.remaining = after.allocated - after.spent - after.reserved - after.debt
  redis.call('HSET', l.key, 'spent', fmt(after.spent), 'debt', fmt(after.debt),
    'over_limit', after.over_limit and '1' or '0')
  emit_spend_events(KEYS[3], ctx, l.scope, unit, l, after)
end

redis.call('HSET', KEYS[2], 'h', ARGV[2], 'r', ARGV[1] .. '|' .. fmt(eff))
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[7]))
return {'OK', now, ARGV[1], fmt(eff)}
