--[[
  Read-only ledger audit of one tenant (reconciliation check 1): for every budget, the stored
  counters must be sane and `reserved` must equal the sum of the estimates of the ACTIVE
  reservations holding budget on it. Runs as one script so the snapshot is consistent with
  concurrent reserves and commits. Bounded: a tenant with more ACTIVE reservations than ARGV[1]
  is not audited (reported as SKIPPED) so the script never blocks Redis for long.

  Input:
    KEYS[1]  tenant record hash   P:{t}:tenant   (its prefix locates reservations and ledgers)
    KEYS[2]  expiry index         P:{t}:exp      (ids of ACTIVE reservations)
    KEYS[3]  budget index         P:{t}:budgets  ("scope|unit" members)
    KEYS[4]  reservation records  P:{t}:rs
    ARGV[1]  maximum ACTIVE reservations to examine

  Output: {'SKIPPED', count} | {'OK', budgets_checked, drift rows...} where each drift row is
  'scope|unit|kind|stored|expected'.
]]
--- @include "common"
--- @include "reservation"

local n = redis.call('ZCARD', KEYS[2])
if n > tonumber(ARGV[1]) then return {'SKIPPED', n} end
local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #'tenant')
local held = {}
for _, short in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local r = load_reservation(KEYS[4], short)
  if r and r.status == 'ACTIVE' then
    local scopes = prefixes(r.scope_path)
    for i = 1, #scopes do
      if string.sub(r.mask, i, i) == '1' then
        local k = scopes[i] .. '|' .. r.unit
        held[k] = (held[k] or 0) + r.estimate
      end
    end
  end
end
local out = {'OK', 0}
local checked = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  local bar = string.find(member, '|', 1, true)
  if bar then
    local scope, unit = string.sub(member, 1, bar - 1), string.sub(member, bar + 1)
    local l = load_ledger(prefix .. 'b:' .. scope .. ':' .. unit)
    if l then
      checked = checked + 1
      local expected = held[member] or 0
      if l.reserved ~= expected then out[#out + 1] = member .. '|reserved|' .. fmt(l.reserved) .. '|' .. fmt(expected) end
      if l.spent < 0 then out[#out + 1] = member .. '|negative_spent|' .. fmt(l.spent) .. '|0' end
      if l.debt < 0 then out[#out + 1] = member .. '|negative_debt|' .. fmt(l.debt) .. '|0' end
      if l.allocated < 0 then out[#out + 1] = member .. '|negative_allocated|' .. fmt(l.allocated) .. '|0' end
    end
  end
end
out[2] = checked
return out
