--[[
  Updates a policy: every given field replaces the stored one wholesale (scope_pattern is
  immutable and never passed). The owner must not be CLOSED; a rename must keep names unique.

  Input:
    KEYS[1]  tenant record hash      P:{t}:tenant
    KEYS[2]  policy hash             P:{t}:pol:<policy_id>
    KEYS[3]  policy names hash       P:{t}:polnames
    KEYS[4]  outbox stream           P:{t}:outbox
    ARGV[1]  policy id   ARGV[2] new name or ''   ARGV[3] updated_at (ISO-8601)
    ARGV[4]  event id base   ARGV[5] request id   ARGV[6] trace id   ARGV[7] actor JSON
    ARGV[8]  tenant id   ARGV[9] changed field names, comma-separated (for the event)
    ARGV[10..] field, value pairs to set

  Output: {'OK', field, value, ...} (the whole record after the update) | {'NOT_FOUND'}
          | {'TENANT_CLOSED'} | {'DUPLICATE_RESOURCE', holder id}

  Side effects: the record, the names hash on a rename, one policy.updated outbox entry.
]]
--- @include "common"

local current = redis.call('HMGET', KEYS[2], 'tenant_id', 'name', 'scope_pattern')
if not current[1] or current[1] ~= ARGV[8] then return {'NOT_FOUND'} end
if redis.call('HGET', KEYS[1], 'status') == 'CLOSED' then return {'TENANT_CLOSED'} end

local name = current[2]
if ARGV[2] ~= '' and ARGV[2] ~= name then
  local holder = redis.call('HGET', KEYS[3], ARGV[2])
  if holder and holder ~= ARGV[1] then return {'DUPLICATE_RESOURCE', holder} end
  if name and redis.call('HGET', KEYS[3], name) == ARGV[1] then redis.call('HDEL', KEYS[3], name) end
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
  name = ARGV[2]
end

local fields = {'updated_at', ARGV[3], 'name', name}
for i = 10, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))

local changed = {}
for f in string.gmatch(ARGV[9], '[^,]+') do changed[#changed + 1] = js(f) end
local ctx = { now = now_ms(), event_base = ARGV[4], request_id = ARGV[5], trace_id = ARGV[6],
  actor = ARGV[7], tenant = ARGV[8], source = 'cycles-admin' }
emit(KEYS[4], ctx, 'policy.updated', 'policy', current[3], jobj({
  'policy_id', js(ARGV[1]), 'name', js(name), 'scope_pattern', js(current[3]),
  'changed_fields', '[' .. table.concat(changed, ',') .. ']',
}))

local out = redis.call('HGETALL', KEYS[2])
table.insert(out, 1, 'OK')
return out
