--[[
  Releases an ACTIVE reservation: returns the held estimate to every budgeted scope.

  Input:
    KEYS[1]  tenant record hash      P:{t}:tenant
    KEYS[2]  reservation records hash P:{t}:rs
    KEYS[3]  expiry index            P:{t}:exp
    KEYS[4]  outbox stream           P:{t}:outbox

    ARGV[1]  caller tenant ('' for the admin key)   ARGV[2] idempotency key
    ARGV[3]  payload hash                           ARGV[4] reason or ''
    ARGV[5]  reservation short id

  Output:
    {'OK', now, released, unit}  /  {'REPLAY', now, released, unit}  /  {<ERROR_CODE>, now, detail...}
    Errors: NOT_FOUND, FORBIDDEN, IDEMPOTENCY_MISMATCH, TENANT_CLOSED, RESERVATION_EXPIRED,
    RESERVATION_FINALIZED, INTERNAL_ERROR.

  Side effects: ledgers reserved -= estimate; reservation status RELEASED; expiry entry removed.
]]
--- @include "common"
--- @include "reservation"

local now = now_ms()
local short = ARGV[5]
local r = load_reservation(KEYS[2], short)
if not r then return {'NOT_FOUND', now} end
if ARGV[1] ~= '' and ARGV[1] ~= r.tenant then return {'FORBIDDEN', now} end

if r.rkey and r.rkey == ARGV[2] then
  if r.rhash ~= ARGV[3] then return {'IDEMPOTENCY_MISMATCH', now} end
  return {'REPLAY', now, fmt(num(r.rres)), r.unit}
end

local refused = settle_guard(KEYS[1], r, now)
if refused then return refused end
if now > r.expires + r.grace then return {'RESERVATION_EXPIRED', now} end

local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #'tenant')
for _, l in ipairs(held_ledgers(prefix, r)) do
  redis.call('HINCRBY', l.key, 'reserved', fmt(-r.estimate))
end
update_reservation(KEYS[2], short, r, {
  status = 'RELEASED', finalized = now, rkey = ARGV[2], rhash = ARGV[3], rres = r.estimate,
  reason = ARGV[4] ~= '' and ARGV[4] or nil,
})
redis.call('ZREM', KEYS[3], short)
return {'OK', now, fmt(r.estimate), r.unit}
