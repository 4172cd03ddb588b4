--[[
  Extends an ACTIVE reservation's expiry by extend_by_ms, relative to its current expires_at.
  Only expires_at and the extension count change; the hold and the scopes stay as they are.

  Input:
    KEYS[1]  tenant record hash      P:{t}:tenant
    KEYS[2]  reservation records hash P:{t}:rs
    KEYS[3]  expiry index            P:{t}:exp
    KEYS[4]  idempotency record      P:{t}:i:extend:<rid>:<key>

    ARGV[1]  caller tenant           ARGV[2] payload hash
    ARGV[3]  extend_by_ms            ARGV[4] reservation short id
    ARGV[5]  default max extensions  ARGV[6] minimum idempotency TTL, ms

  Output:
    {'OK', now, expires_at, status}  /  {'REPLAY', now, expires_at, status}  /  {<ERROR>, now}
    Errors: NOT_FOUND, FORBIDDEN, IDEMPOTENCY_MISMATCH, TENANT_CLOSED, RESERVATION_EXPIRED,
    RESERVATION_FINALIZED, MAX_EXTENSIONS_EXCEEDED, INTERNAL_ERROR.
]]
--- @include "common"
--- @include "reservation"

local now = now_ms()
local r = load_reservation(KEYS[2], ARGV[4])
if not r then return {'NOT_FOUND', now} end
if ARGV[1] ~= '' and ARGV[1] ~= r.tenant then return {'FORBIDDEN', now} end

local idem = redis.call('HMGET', KEYS[4], 'h', 'r')
if idem[1] then
  if idem[1] ~= ARGV[2] then return {'IDEMPOTENCY_MISMATCH', now} end
  return {'REPLAY', now, idem[2], r.status}
end

local refused = settle_guard(KEYS[1], r, now)
if refused then return refused end
if now > r.expires then return {'RESERVATION_EXPIRED', now} end

local max_ext = tonumber(redis.call('HGET', KEYS[1], 'max_reservation_extensions') or '') or tonumber(ARGV[5])
if r.ext >= max_ext then return {'MAX_EXTENSIONS_EXCEEDED', now, fmt(max_ext)} end

local expires = r.expires + tonumber(ARGV[3])
update_reservation(KEYS[2], ARGV[4], r, { expires = expires, ext = r.ext + 1 })
redis.call('ZADD', KEYS[3], expires + r.grace, ARGV[4])
local ttl = expires + r.grace - now + tonumber(ARGV[6])
redis.call('HSET', KEYS[4], 'h', ARGV[2], 'r', fmt(expires))
redis.call('PEXPIRE', KEYS[4], ttl)
return {'OK', now, fmt(expires), 'ACTIVE'}
