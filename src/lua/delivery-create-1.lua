--[[
  Creates delivery records for one subscription owner (events digest §2.2), idempotently: a
  delivery id that already exists is left as it is and reported with its current status, so a
  relay that crashed after this script and runs again enqueues exactly the same deliveries.

  Input:
    KEYS[1]  owner's subscription index   P:{o}:whs   (fixes the slot; the other keys share its tag)
    ARGV[1]  owner key prefix             P:{o}:
    ARGV[2]  delivery record TTL in ms
    ARGV[3]  now, ISO-8601
    ARGV[4]  now, epoch ms
    ARGV[5..] groups of 8: delivery_id, subscription_id, event_id, event_type, tenant_id,
              trace_id, trace_flags, traceparent_inbound_valid ('' = absent)

  Output: flat list of delivery_id, status pairs, where status is the record's status after the
  call (PENDING for a new one) or SKIPPED when the subscription is gone or no longer ACTIVE.
]]
local prefix = ARGV[1]
local ttl = tonumber(ARGV[2])
local out = {}
for i = 5, #ARGV, 8 do
  local id, sub = ARGV[i], ARGV[i + 1]
  local dkey = prefix .. 'dl:' .. id
  local existing = redis.call('HGET', dkey, 'status')
  if existing then
    out[#out + 1] = id
    out[#out + 1] = existing
  else
    local sub_status = redis.call('HGET', prefix .. 'wh:' .. sub, 'status')
    if sub_status ~= 'ACTIVE' then
      out[#out + 1] = id
      out[#out + 1] = 'SKIPPED'
    else
      local f = {
        'delivery_id', id, 'subscription_id', sub, 'event_id', ARGV[i + 2], 'event_type', ARGV[i + 3],
        'tenant_id', ARGV[i + 4], 'status', 'PENDING', 'attempted_at', ARGV[3], 'attempted_at_ms', ARGV[4],
        'attempts', '0',
      }
      if ARGV[i + 5] ~= '' then f[#f + 1] = 'trace_id'; f[#f + 1] = ARGV[i + 5] end
      if ARGV[i + 6] ~= '' then f[#f + 1] = 'trace_flags'; f[#f + 1] = ARGV[i + 6] end
      if ARGV[i + 7] ~= '' then f[#f + 1] = 'traceparent_inbound_valid'; f[#f + 1] = ARGV[i + 7] end
      redis.call('HSET', dkey, unpack(f))
      redis.call('PEXPIRE', dkey, ttl)
      redis.call('ZADD', prefix .. 'whd:' .. sub, tonumber(ARGV[4]), id)
      out[#out + 1] = id
      out[#out + 1] = 'PENDING'
    end
  end
end
return out
