--[[
  Creates a tenant record, idempotent by tenant id: the same id with the same name returns the
  stored tenant; with another name it is a conflict.

  Input:
    KEYS[1]  tenant record hash      P:{t}:tenant
    KEYS[2]  outbox stream           P:{t}:outbox
    ARGV[1]  name    ARGV[2] event id base   ARGV[3] request id   ARGV[4] trace id
    ARGV[5]  actor JSON   ARGV[6] tenant id
    ARGV[7..] field, value pairs of the new record (status and created_at included)

  Output: {'CREATED'} | {'EXISTS'} | {'DUPLICATE_RESOURCE'}
]]
--- @include "common"

local existing = redis.call('HGET', KEYS[1], 'name')
if existing then
  if existing == ARGV[1] then return {'EXISTS'} end
  return {'DUPLICATE_RESOURCE'}
end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
local ctx = { now = now_ms(), event_base = ARGV[2], request_id = ARGV[3], trace_id = ARGV[4],
  actor = ARGV[5], tenant = ARGV[6], source = 'cycles-admin' }
emit(KEYS[2], ctx, 'tenant.created', 'tenant', nil, jobj({
  'tenant_id', js(ARGV[6]), 'name', js(ARGV[1]), 'new_status', js('ACTIVE'),
}))
return {'CREATED'}
