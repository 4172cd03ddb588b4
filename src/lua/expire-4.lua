--[[
  Expires due reservations of one tenant in a bounded batch: every ACTIVE reservation whose
  expires_at + grace has passed returns its hold to its scopes and becomes EXPIRED.

  Input:
    KEYS[1]  tenant record hash      P:{t}:tenant  (its prefix locates reservations and ledgers)
    KEYS[2]  expiry index            P:{t}:exp
    KEYS[3]  outbox stream           P:{t}:outbox
    KEYS[4]  reservation listing index P:{t}:rix

    ARGV[1]  batch size (bound on reservations handled in this call)
    ARGV[2]  retention of finalized records, ms
    ARGV[3]  event id base           ARGV[4] actor JSON           ARGV[5] tenant id
    ARGV[6]  listing cutoff, ms: index entries created before it whose record has expired
             (retention) are trimmed, at most ARGV[1] per call

  Output: {expired_count, more_due (0|1)}

  Only what is due is read (ZRANGEBYSCORE up to now), so the cost follows expirations, not the
  number of live reservations. An index entry whose reservation was extended is re-scored by the
  extend script, so it is simply not due; an entry for a finalized or vanished record is dropped.
]]
--- @include "common"
--- @include "reservation"

local now = now_ms()
local batch = tonumber(ARGV[1])
local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #'tenant')
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - 1, 'LIMIT', 0, batch)
local ctx = { now = now, event_base = ARGV[3], request_id = '', trace_id = '', actor = ARGV[4],
  tenant = ARGV[5], source = 'cycles-expiry' }
local expired = 0
for _, rid in ipairs(due) do
  local key = prefix .. 'r:' .. rid
  local r = load_reservation(key)
  if r and r.status == 'ACTIVE' and now > r.expires + r.grace then
    for _, l in ipairs(held_ledgers(prefix, r)) do
      redis.call('HINCRBY', l.key, 'reserved', fmt(-r.estimate))
    end
    redis.call('HSET', key, 'status', 'EXPIRED', 'expired_at', fmt(now))
    redis.call('PEXPIRE', key, tonumber(ARGV[2]))
    emit(KEYS[3], ctx, 'reservation.expired', 'reservation', r.scope_path, jobj({
      'reservation_id', js(rid), 'scope', js(r.scope_path), 'unit', js(r.unit),
      'estimated_amount', fmt(r.estimate), 'created_at', js(iso_ms(r.created)),
      'expired_at', js(iso_ms(r.expires)), 'ttl_ms', fmt(r.expires - r.created), 'extensions_used', fmt(r.ext),
    }))
    expired = expired + 1
    redis.call('ZREM', KEYS[2], rid)
  elseif (not r) or r.status ~= 'ACTIVE' then
    redis.call('ZREM', KEYS[2], rid)
  end
end
local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[6], 'LIMIT', 0, batch)
local trimmed = 0
for _, rid in ipairs(old) do
  if redis.call('EXISTS', prefix .. 'r:' .. rid) == 0 then
    redis.call('ZREM', KEYS[4], rid)
    trimmed = trimmed + 1
  end
end

local more = 0
if #due == batch or trimmed == batch then more = 1 end
return {expired, more}
