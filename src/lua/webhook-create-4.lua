--[[
  Creates a webhook subscription in its owner's slot.

  Input:
    KEYS[1]  owner tenant record hash   P:{t}:tenant   (unused for the __system__ owner)
    KEYS[2]  subscription hash          P:{t}:wh:<subscription_id>
    KEYS[3]  owner's subscription index P:{t}:whs
    KEYS[4]  outbox stream              P:{t}:outbox
    ARGV[1]  subscription id   ARGV[2] owner id   ARGV[3] '1' when the owner is a concrete tenant
    ARGV[4]  '1' to emit webhook.created (admin plane only)
    ARGV[5]  event id base   ARGV[6] request id   ARGV[7] trace id   ARGV[8] actor JSON
    ARGV[9]  event data JSON
    ARGV[10..] field, value pairs of the record (encrypted secret, JSON-valued settings, ...)

  Output: {'CREATED'} | {'TENANT_NOT_FOUND'} | {'TENANT_CLOSED'} | {'DUPLICATE_RESOURCE'}

  Side effects: the record, its index entry, and (ARGV[4]) one webhook.created outbox entry with
  correlation id webhook_create:<id>.
]]
--- @include "common"
--- @include "webhook"

if ARGV[3] == '1' then
  local status = redis.call('HGET', KEYS[1], 'status')
  if not status then return {'TENANT_NOT_FOUND'} end
  if status == 'CLOSED' then return {'TENANT_CLOSED'} end
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'DUPLICATE_RESOURCE'} end

local fields = {}
for i = 10, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('ZADD', KEYS[3], 0, ARGV[1])

if ARGV[4] == '1' then
  local ctx = { now = now_ms(), event_base = ARGV[5], request_id = ARGV[6], trace_id = ARGV[7],
    actor = ARGV[8], tenant = ARGV[2], correlation_id = 'webhook_create:' .. ARGV[1] }
  emit_webhook(KEYS[4], ctx, 'webhook.created', ARGV[9])
end
return {'CREATED'}
