--[[
  Expires due reservations of one tenant in a bounded batch: every ACTIVE reservation whose
  expires_at + grace has passed returns its hold to its scopes and becomes EXPIRED. Then purges
  finalized records older than the retention period (ADR 0019), in a bounded scan of the
  reservation log that resumes where the previous call stopped.

  Input:
    KEYS[1]  tenant record hash      P:{t}:tenant  (its prefix locates the ledgers)
    KEYS[2]  expiry index            P:{t}:exp
    KEYS[3]  outbox stream           P:{t}:outbox
    KEYS[4]  reservation records     P:{t}:rs
    KEYS[5]  reservation log stream  P:{t}:rlog
    KEYS[6]  live idempotency index  P:{t}:ik
    KEYS[7]  purge cursor            P:{t}:rlogc  (last log id the purge examined)

    ARGV[1]  batch size (bound on reservations expired in this call)
    ARGV[2]  retention of finalized records, ms
    ARGV[3]  event id base           ARGV[4] actor JSON           ARGV[5] tenant id
    ARGV[6]  purge scan size (log entries examined in this call; 0 = no purge)
    ARGV[7]  minimum idempotency window, ms: a record younger than this is kept whatever the
             retention, so a retried reserve replays for at least as long as before ADR 0019

  Output: {expired_count, more (0|1), purged_count}

  Only what is due is read (ZRANGEBYSCORE up to now), so the cost follows expirations, not the
  number of live reservations. An index entry whose reservation was extended is re-scored by the
  extend script, so it is simply not due; an entry for a finalized or vanished record is dropped.
  The purge examines only log entries created before now - max(retention, ARGV[7]) (a record
  finalized later than its creation is kept until its own finalized_at + retention), and removes the record, its
  idempotency index entry (when it still points at it) and its log entry.
]]
--- @include "common"
--- @include "reservation"

local now = now_ms()
local batch = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #'tenant')
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - 1, 'LIMIT', 0, batch)
local ctx = { now = now, event_base = ARGV[3], request_id = '', trace_id = '', actor = ARGV[4],
  tenant = ARGV[5], source = 'cycles-expiry' }
local expired = 0
for _, short in ipairs(due) do
  local r = load_reservation(KEYS[4], short)
  if r and r.status == 'ACTIVE' and now > r.expires + r.grace then
    for _, l in ipairs(held_ledgers(prefix, r)) do
      redis.call('HINCRBY', l.key, 'reserved', fmt(-r.estimate))
    end
    update_reservation(KEYS[4], short, r, { status = 'EXPIRED', expired_at = now })
    emit(KEYS[3], ctx, 'reservation.expired', 'reservation', r.scope_path, jobj({
      'reservation_id', js(full_rid(ARGV[5], short)), 'scope', js(r.scope_path), 'unit', js(r.unit),
      'estimated_amount', fmt(r.estimate), 'created_at', js(iso_ms(r.created)),
      'expired_at', js(iso_ms(r.expires)), 'ttl_ms', fmt(r.expires - r.created), 'extensions_used', fmt(r.ext),
    }))
    expired = expired + 1
    redis.call('ZREM', KEYS[2], short)
  elseif r and r.status ~= 'ACTIVE' then
    redis.call('ZREM', KEYS[2], short)
  elseif not r and string.sub(short, 1, 4) ~= 'rsv_' then
    -- A full id is an entry of the layout before ADR 0019 (a process of the previous version
    -- still running): the migration moves it with its record, so it stays.
    redis.call('ZREM', KEYS[2], short)
  end
end

local scan = tonumber(ARGV[6])
local purged = 0
local scanned = 0
if scan > 0 then
  local from = redis.call('GET', KEYS[7])
  local window = math.max(retention, tonumber(ARGV[7]))
  local entries = redis.call('XRANGE', KEYS[5], from and ('(' .. from) or '-', fmt(now - window - 1), 'COUNT', scan)
  scanned = #entries
  for _, e in ipairs(entries) do
    local short = e[2][2]
    local r = load_reservation(KEYS[4], short)
    local gone = not r
    if r and r.status ~= 'ACTIVE' then
      local fin = num(r.finalized)
      if fin == 0 then fin = num(r.expired_at) end
      if fin + retention <= now then
        redis.call('HDEL', KEYS[4], short)
        if r.idem then
          local f = idem_field(r.idem)
          if redis.call('HGET', KEYS[6], f) == short then redis.call('HDEL', KEYS[6], f) end
        end
        gone = true
        purged = purged + 1
      end
    end
    if gone then redis.call('XDEL', KEYS[5], e[1]) end
  end
  if scanned < scan then
    redis.call('DEL', KEYS[7])
  else
    redis.call('SET', KEYS[7], entries[scanned][1])
  end
end

local more = 0
if #due == batch or (scan > 0 and scanned == scan) then more = 1 end
return {expired, more, purged}
