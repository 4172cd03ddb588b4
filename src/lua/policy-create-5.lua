--[[
  Creates a policy for an ACTIVE tenant. Names are unique within a tenant.

  Input:
    KEYS[1]  tenant record hash      P:{t}:tenant
    KEYS[2]  policy hash             P:{t}:pol:<policy_id>
    KEYS[3]  policy listing index    P:{t}:pols
    KEYS[4]  policy names hash       P:{t}:polnames
    KEYS[5]  outbox stream           P:{t}:outbox
    ARGV[1]  policy id   ARGV[2] name   ARGV[3] scope pattern
    ARGV[4]  event id base   ARGV[5] request id   ARGV[6] trace id   ARGV[7] actor JSON
    ARGV[8]  tenant id
    ARGV[9..] further field, value pairs (status, priority, timestamps, JSON-valued settings)

  Output: {'CREATED'} | {'TENANT_NOT_FOUND'} | {'TENANT_CLOSED'} | {'INVALID_REQUEST', msg}
          | {'DUPLICATE_RESOURCE', existing policy id}

  Side effects: the record, its index and name entries, one policy.created outbox entry.
]]
--- @include "common"

local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'TENANT_NOT_FOUND'} end
if status == 'CLOSED' then return {'TENANT_CLOSED'} end
if status ~= 'ACTIVE' then return {'INVALID_REQUEST', 'Tenant is ' .. status .. ': ' .. ARGV[8]} end
local holder = redis.call('HGET', KEYS[4], ARGV[2])
if holder then return {'DUPLICATE_RESOURCE', holder} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'DUPLICATE_RESOURCE', ARGV[1]} end

local fields = {'policy_id', ARGV[1], 'tenant_id', ARGV[8], 'name', ARGV[2], 'scope_pattern', ARGV[3]}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[1])

local ctx = { now = now_ms(), event_base = ARGV[4], request_id = ARGV[5], trace_id = ARGV[6],
  actor = ARGV[7], tenant = ARGV[8], source = 'cycles-admin' }
emit(KEYS[5], ctx, 'policy.created', 'policy', ARGV[3], jobj({
  'policy_id', js(ARGV[1]), 'name', js(ARGV[2]), 'scope_pattern', js(ARGV[3]),
}))
return {'CREATED'}
