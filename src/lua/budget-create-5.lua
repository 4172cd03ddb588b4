--[[
  Creates the budget ledger of one (scope, unit) for an ACTIVE tenant.

  Input:
    KEYS[1]  tenant record hash      P:{t}:tenant
    KEYS[2]  ledger hash             P:{t}:b:<scope>:<unit>
    KEYS[3]  budget listing index    P:{t}:budgets
    KEYS[4]  scope -> units hash     P:{t}:bunits
    KEYS[5]  outbox stream           P:{t}:outbox
    ARGV[1]  scope   ARGV[2] unit   ARGV[3] allocated   ARGV[4] overdraft limit
    ARGV[5]  event id base   ARGV[6] request id   ARGV[7] trace id   ARGV[8] actor JSON
    ARGV[9]  tenant id
    ARGV[10..] further field, value pairs (ledger_id, timestamps, policy, metadata)

  Output: {'CREATED'} | {'TENANT_NOT_FOUND'} | {'TENANT_CLOSED'} | {'INVALID_REQUEST', msg}
          | {'DUPLICATE_RESOURCE'}
]]
--- @include "common"

local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'TENANT_NOT_FOUND'} end
if status == 'CLOSED' then return {'TENANT_CLOSED'} end
if status ~= 'ACTIVE' then return {'INVALID_REQUEST', 'Tenant is not ACTIVE'} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'DUPLICATE_RESOURCE'} end

local fields = {'scope', ARGV[1], 'unit', ARGV[2], 'allocated', ARGV[3], 'spent', '0',
  'reserved', '0', 'debt', '0', 'overdraft_limit', ARGV[4], 'over_limit', '0', 'status', 'ACTIVE'}
for i = 10, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('ZADD', KEYS[3], 0, ARGV[1] .. '|' .. ARGV[2])
local units = redis.call('HGET', KEYS[4], ARGV[1])
if units and units ~= '' then units = units .. ',' .. ARGV[2] else units = ARGV[2] end
redis.call('HSET', KEYS[4], ARGV[1], units)

local ctx = { now = now_ms(), event_base = ARGV[5], request_id = ARGV[6], trace_id = ARGV[7],
  actor = ARGV[8], tenant = ARGV[9], source = 'cycles-admin' }
emit(KEYS[5], ctx, 'budget.created', 'budget', ARGV[1], jobj({
  'scope', js(ARGV[1]), 'unit', js(ARGV[2]), 'operation', js('CREATE'),
  'new_allocated', fmt(tonumber(ARGV[3])), 'overdraft_limit', fmt(tonumber(ARGV[4])),
}))
return {'CREATED'}
