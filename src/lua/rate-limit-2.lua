--[[
  Runtime request rate limit (ADR 0017): one token bucket per tenant and one per API key, checked
  together; a request takes a token from both or from neither.

  Each bucket is kept as a single number, GCRA style: the epoch microsecond at which the bucket
  is full again ("tat"). With interval T = 1/rate and capacity C, the bucket holds
  C - (tat - now) / T tokens at `now`. Taking one token moves tat to max(tat, now) + T, which is
  allowed while that stays within C * T of now. Integer microseconds keep the arithmetic exact.

  Input:
    KEYS[1]  tenant bucket    P:{t}:rl:tenant
    KEYS[2]  key bucket       P:{t}:rl:key:<key_id>
    ARGV[1]  tenant rate, requests per second (0: no tenant limit)
    ARGV[2]  tenant capacity, requests (the burst)
    ARGV[3]  key rate, requests per second (0: no key limit)
    ARGV[4]  key capacity, requests

  Output:
    {'OK', scope, capacity, remaining, full_at_ms, 0}
    {'LIMITED', scope, capacity, 0, full_at_ms, retry_after_ms}
  scope ('tenant' | 'key' | '') names the bucket the figures describe: on OK the one with the
  fewest tokens left, on LIMITED the refusing one that makes the caller wait longest.
  full_at_ms is when that bucket is full again (epoch ms); retry_after_ms is when both buckets
  will have a token.

  Side effects: on OK each limited bucket is SET to its new tat with PX until that moment, so an
  idle bucket expires exactly when it is full again. On LIMITED nothing is written.
]]

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local buckets = {}
local function add(key, scope, rate, capacity)
  rate = tonumber(rate)
  capacity = tonumber(capacity)
  if rate <= 0 then return end
  local interval = math.floor(1000000 / rate)
  if interval < 1 then interval = 1 end
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local next_tat = tat + interval
  buckets[#buckets + 1] = {
    key = key, scope = scope, capacity = capacity, interval = interval, tat = tat,
    next_tat = next_tat,
    -- > 0: microseconds until this bucket has a token; <= 0: spare room after taking one.
    wait = next_tat - now - capacity * interval,
  }
end
add(KEYS[1], 'tenant', ARGV[1], ARGV[2])
add(KEYS[2], 'key', ARGV[3], ARGV[4])

if #buckets == 0 then return {'OK', '', 0, 0, 0, 0} end

local refusing
for _, b in ipairs(buckets) do
  if b.wait > 0 and (refusing == nil or b.wait > refusing.wait) then refusing = b end
end
if refusing then
  return {'LIMITED', refusing.scope, refusing.capacity, 0, math.ceil(refusing.tat / 1000),
    math.ceil(refusing.wait / 1000)}
end

local tightest
for _, b in ipairs(buckets) do
  b.remaining = math.floor(-b.wait / b.interval)
  if tightest == nil or b.remaining < tightest.remaining then tightest = b end
  redis.call('SET', b.key, string.format('%.0f', b.next_tat), 'PX', math.ceil((b.next_tat - now) / 1000))
end
return {'OK', tightest.scope, tightest.capacity, tightest.remaining, math.ceil(tightest.next_tat / 1000), 0}
