--[[
  Applies a computed PATCH to a webhook subscription, if the record is still the revision the
  caller read (the caller diffed against it and chose the event).

  Input:
    KEYS[1]  owner tenant record hash   P:{t}:tenant   (unused for the __system__ owner)
    KEYS[2]  subscription hash          P:{t}:wh:<subscription_id>
    KEYS[3]  outbox stream              P:{t}:outbox
    ARGV[1]  expected revision (the record's `rev` field as read)
    ARGV[2]  owner id   ARGV[3] '1' when the owner is a concrete tenant
    ARGV[4]  event type to emit, '' for none
    ARGV[5]  event id base   ARGV[6] request id   ARGV[7] trace id   ARGV[8] actor JSON
    ARGV[9]  event data JSON   ARGV[10] correlation id
    ARGV[11..] field, value pairs to set

  Output: {'OK'} | {'NOT_FOUND'} | {'TENANT_CLOSED'} | {'RETRY'} (the record changed meanwhile)

  Side effects: the fields, rev + 1, and at most one webhook.* outbox entry.
]]
--- @include "common"
--- @include "webhook"

if redis.call('EXISTS', KEYS[2]) == 0 then return {'NOT_FOUND'} end
if ARGV[3] == '1' and redis.call('HGET', KEYS[1], 'status') == 'CLOSED' then return {'TENANT_CLOSED'} end
local rev = redis.call('HGET', KEYS[2], 'rev') or '0'
if rev ~= ARGV[1] then return {'RETRY'} end

if #ARGV >= 12 then
  local fields = {}
  for i = 11, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', KEYS[2], unpack(fields))
end
redis.call('HSET', KEYS[2], 'rev', fmt(tonumber(rev) + 1))

if ARGV[4] ~= '' then
  local ctx = { now = now_ms(), event_base = ARGV[5], request_id = ARGV[6], trace_id = ARGV[7],
    actor = ARGV[8], tenant = ARGV[2], correlation_id = ARGV[10] }
  emit_webhook(KEYS[3], ctx, ARGV[4], ARGV[9])
end
return {'OK'}
