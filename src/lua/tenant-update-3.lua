--[[
  Updates a tenant's fields and status (ACTIVE <-> SUSPENDED -> CLOSED; CLOSED is terminal).
  A transition to CLOSED is the commit point of the close cascade (ADR 0015): the same step that
  flips the status records the cascade's correlation id, so every later cascade batch, however
  interrupted, stamps its events with the id of the close that started it.

  Input:
    KEYS[1]  tenant record hash      P:{t}:tenant
    KEYS[2]  outbox stream           P:{t}:outbox
    KEYS[3]  cascade state hash      P:{t}:cascade
    ARGV[1]  new status or ''        ARGV[2] now, ISO-8601 (updated_at and transition stamps)
    ARGV[3]  event id base   ARGV[4] request id   ARGV[5] trace id   ARGV[6] actor JSON
    ARGV[7]  tenant id       ARGV[8] fields to delete (comma list, '' for none)
    ARGV[9]  correlation id or '' (stamped on the tenant event)
    ARGV[10] cascade correlation id (recorded when the status becomes or stays CLOSED)
    ARGV[11] now, epoch ms (cascade state timestamps)
    ARGV[12..] field, value pairs to set

  Output: {'OK', previous_status} | {'TENANT_NOT_FOUND'} | {'INVALID_REQUEST', message}

  Side effects: the record; on a fresh close the cascade state (correlation_id, state 'running',
  started_at_ms) and one tenant.closed outbox entry; on a re-close of a tenant closed before the
  cascade existed, the missing cascade state is created (no event). Other transitions emit
  tenant.suspended / tenant.reactivated / tenant.updated.
]]
--- @include "common"

local previous = redis.call('HGET', KEYS[1], 'status')
if not previous then return {'TENANT_NOT_FOUND'} end
local target = ARGV[1]
if target ~= '' and previous == 'CLOSED' and target ~= 'CLOSED' then
  return {'INVALID_REQUEST', 'Cannot transition from CLOSED'}
end

local fields = {'updated_at', ARGV[2]}
for i = 12, #ARGV do fields[#fields + 1] = ARGV[i] end
if target ~= '' then
  fields[#fields + 1] = 'status'
  fields[#fields + 1] = target
  if target == 'SUSPENDED' and previous ~= 'SUSPENDED' then
    fields[#fields + 1] = 'suspended_at'
    fields[#fields + 1] = ARGV[2]
  end
  if target == 'CLOSED' and previous ~= 'CLOSED' then
    fields[#fields + 1] = 'closed_at'
    fields[#fields + 1] = ARGV[2]
  end
end
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[8] ~= '' then
  for f in string.gmatch(ARGV[8], '[^,]+') do redis.call('HDEL', KEYS[1], f) end
end

if target == 'CLOSED' then
  if previous ~= 'CLOSED' then
    redis.call('HSET', KEYS[3], 'correlation_id', ARGV[10], 'state', 'running', 'started_at_ms', ARGV[11])
  elseif redis.call('HEXISTS', KEYS[3], 'correlation_id') == 0 then
    redis.call('HSET', KEYS[3], 'correlation_id', ARGV[10], 'state', 'running', 'started_at_ms', ARGV[11])
  end
end

local ctx = { now = now_ms(), event_base = ARGV[3], request_id = ARGV[4], trace_id = ARGV[5],
  actor = ARGV[6], tenant = ARGV[7], source = 'cycles-admin', correlation_id = ARGV[9] }
local event_type = 'tenant.updated'
if target == 'SUSPENDED' then event_type = 'tenant.suspended'
elseif target == 'ACTIVE' then event_type = 'tenant.reactivated'
elseif target == 'CLOSED' then
  if previous == 'CLOSED' then event_type = nil else event_type = 'tenant.closed' end
end
if event_type then
  emit(KEYS[2], ctx, event_type, 'tenant', nil, jobj({
    'tenant_id', js(ARGV[7]), 'previous_status', js(previous),
    'new_status', js(target ~= '' and target or previous),
  }))
end
return {'OK', previous}
