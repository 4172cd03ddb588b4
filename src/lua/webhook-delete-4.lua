--[[
  Deletes a webhook subscription: the record (with its encrypted secret) and its index entry.

  Input:
    KEYS[1]  owner tenant record hash   P:{t}:tenant   (unused for the __system__ owner)
    KEYS[2]  subscription hash          P:{t}:wh:<subscription_id>
    KEYS[3]  owner's subscription index P:{t}:whs
    KEYS[4]  outbox stream              P:{t}:outbox
    ARGV[1]  subscription id   ARGV[2] owner id   ARGV[3] '1' when the owner is a concrete tenant
    ARGV[4]  '1' to emit webhook.deleted (admin plane only)
    ARGV[5]  event id base   ARGV[6] request id   ARGV[7] trace id   ARGV[8] actor JSON
    ARGV[9]  correlation id of the event ('' or absent: webhook_delete:<id>; a bulk DELETE
             passes webhook_bulk_action:delete:<request_id>)

  Output: {'OK', previous status} | {'NOT_FOUND'} | {'TENANT_CLOSED'}

  Side effects: record and index entry removed; (ARGV[4]) one webhook.deleted outbox entry with
  previous_status and the correlation id of ARGV[9].
]]
--- @include "common"
--- @include "webhook"

local status = redis.call('HGET', KEYS[2], 'status')
if not status then return {'NOT_FOUND'} end
if ARGV[3] == '1' and redis.call('HGET', KEYS[1], 'status') == 'CLOSED' then return {'TENANT_CLOSED'} end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])

if ARGV[4] == '1' then
  local ctx = { now = now_ms(), event_base = ARGV[5], request_id = ARGV[6], trace_id = ARGV[7],
    actor = ARGV[8], tenant = ARGV[2],
    correlation_id = (ARGV[9] and ARGV[9] ~= '') and ARGV[9] or 'webhook_delete:' .. ARGV[1] }
  emit_webhook(KEYS[4], ctx, 'webhook.deleted', jobj({
    'subscription_id', js(ARGV[1]), 'tenant_id', js(ARGV[2]), 'previous_status', js(status), 'changed_fields', '[]',
  }))
end
return {'OK', status}
