--[[
  Records the outcome of one delivery attempt, atomically with the subscription's delivery state
  (events digest §2.9–§2.11). Only a PENDING or RETRYING delivery changes; anything else (a
  duplicate job, a finished delivery) is reported as TERMINAL and left alone.

  Input:
    KEYS[1]  delivery hash        P:{o}:dl:<delivery_id>
    KEYS[2]  subscription hash    P:{o}:wh:<subscription_id>
    KEYS[3]  owner outbox stream  P:{o}:outbox
    ARGV[1]  outcome: SUCCESS | RETRY | FAIL (retries exhausted: counts toward auto-disable)
             | FAIL_UPSTREAM (stale, event or subscription gone, inactive: counts nothing)
    ARGV[2]  '1' when an HTTP attempt was made (attempts + 1)
    ARGV[3]  now ISO   ARGV[4] response_status ('' = unchanged)   ARGV[5] response_time_ms ('' = unchanged)
    ARGV[6]  error_message ('' = unchanged)   ARGV[7] next_retry_at ISO (RETRY only)
    ARGV[8]  trace id to record when the delivery has none ('' = none)
    ARGV[9]  event id base for webhook.disabled   ARGV[10] owner id   ARGV[11] trace id of the delivery
    ARGV[12] the actor JSON of the worker ({"type":"system"})

  Output: {status, attempts, extra} where status is the delivery's new status, or
  {'MISSING'} / {'TERMINAL', status}; extra = 'DISABLED' when this failure auto-disabled the
  subscription, else ''.
]]
--- @include "common"

local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'MISSING'} end
if status ~= 'PENDING' and status ~= 'RETRYING' then return {'TERMINAL', status} end

local outcome, now = ARGV[1], ARGV[3]
local attempts = num(redis.call('HGET', KEYS[1], 'attempts'))
if ARGV[2] == '1' then attempts = attempts + 1 end
local f = {'attempts', fmt(attempts)}
if ARGV[4] ~= '' then f[#f + 1] = 'response_status'; f[#f + 1] = ARGV[4] end
if ARGV[5] ~= '' then f[#f + 1] = 'response_time_ms'; f[#f + 1] = ARGV[5] end
if ARGV[6] ~= '' then f[#f + 1] = 'error_message'; f[#f + 1] = ARGV[6] end
if ARGV[8] ~= '' and not redis.call('HGET', KEYS[1], 'trace_id') then f[#f + 1] = 'trace_id'; f[#f + 1] = ARGV[8] end

local new_status
if outcome == 'SUCCESS' then new_status = 'SUCCESS'
elseif outcome == 'RETRY' then new_status = 'RETRYING'
else new_status = 'FAILED' end
f[#f + 1] = 'status'; f[#f + 1] = new_status
if new_status == 'RETRYING' then
  f[#f + 1] = 'next_retry_at'; f[#f + 1] = ARGV[7]
else
  f[#f + 1] = 'completed_at'; f[#f + 1] = now
end
redis.call('HSET', KEYS[1], unpack(f))

local extra = ''
local sub_status = redis.call('HGET', KEYS[2], 'status')
if sub_status then
  if outcome == 'SUCCESS' then
    redis.call('HSET', KEYS[2], 'consecutive_failures', '0', 'last_triggered_at', now, 'last_success_at', now)
  elseif outcome == 'FAIL' then
    local failures = num(redis.call('HGET', KEYS[2], 'consecutive_failures')) + 1
    local threshold = num(redis.call('HGET', KEYS[2], 'disable_after_failures'))
    if threshold < 1 then threshold = 10 end
    redis.call('HSET', KEYS[2], 'consecutive_failures', fmt(failures), 'last_triggered_at', now, 'last_failure_at', now)
    if failures >= threshold and sub_status ~= 'DISABLED' then
      redis.call('HSET', KEYS[2], 'status', 'DISABLED', 'updated_at', now)
      redis.call('HINCRBY', KEYS[2], 'rev', 1)
      local sub_id = redis.call('HGET', KEYS[2], 'subscription_id')
      local delivery_id = redis.call('HGET', KEYS[1], 'delivery_id')
      local ctx = { now = now_ms(), event_base = ARGV[9], request_id = '', trace_id = ARGV[11], actor = ARGV[12],
        tenant = ARGV[10], source = 'cycles-events',
        correlation_id = 'webhook_auto_disable:' .. sub_id .. ':' .. delivery_id }
      emit(KEYS[3], ctx, 'webhook.disabled', 'webhook', nil, jobj({
        'subscription_id', js(sub_id), 'tenant_id', js(ARGV[10]), 'previous_status', js(sub_status),
        'new_status', js('DISABLED'), 'changed_fields', '[]',
        'disable_reason', js('consecutive_failures_exceeded_threshold'),
      }))
      extra = 'DISABLED'
    end
  end
end
return {new_status, fmt(attempts), extra}
