--[[
  Explicit repair of one budget's `reserved` counter (reconciliation runbook): sets it to the sum
  of the estimates of the ACTIVE reservations holding budget on that (scope, unit), read in the
  same script so the snapshot is consistent with concurrent reserves and commits. Nothing else
  of the ledger changes. Bounded like the audit: a tenant with more ACTIVE reservations than
  ARGV[3] is refused.

  Input:
    KEYS[1]  tenant record hash   P:{t}:tenant
    KEYS[2]  expiry index         P:{t}:exp
    KEYS[3]  budget ledger hash   P:{t}:b:<scope>:<unit>
    KEYS[4]  reservation records  P:{t}:rs
    ARGV[1]  scope   ARGV[2] unit   ARGV[3] maximum ACTIVE reservations to examine

  Output: {'OK', previous_reserved, new_reserved} | {'BUDGET_NOT_FOUND'} | {'SKIPPED', count}
]]
--- @include "common"
--- @include "reservation"

if redis.call('EXISTS', KEYS[3]) == 0 then return {'BUDGET_NOT_FOUND'} end
local n = redis.call('ZCARD', KEYS[2])
if n > tonumber(ARGV[3]) then return {'SKIPPED', n} end
local held = 0
for _, short in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local r = load_reservation(KEYS[4], short)
  if r and r.status == 'ACTIVE' and r.unit == ARGV[2] then
    local scopes = prefixes(r.scope_path)
    for i = 1, #scopes do
      if scopes[i] == ARGV[1] and string.sub(r.mask, i, i) == '1' then held = held + r.estimate end
    end
  end
end
local before = num(redis.call('HGET', KEYS[3], 'reserved'))
redis.call('HSET', KEYS[3], 'reserved', fmt(held))
return {'OK', fmt(before), fmt(held)}
