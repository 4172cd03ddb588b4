--[[
  Moves one batch of a tenant's reservations from the first layout (one hash per reservation,
  P:{t}:r:<rid>, listed by the zset P:{t}:rix, idempotency in P:{t}:i:reserve:<key>) to the
  record layout of ADR 0019. Oldest first, so the log stays in creation order. Each reservation
  moves whole inside this call; a call that finds a reservation already moved only drops its
  index entry, so concurrent or repeated runs are safe.

  Input:
    KEYS[1]  tenant record hash        P:{t}:tenant (its prefix locates the old keys)
    KEYS[2]  old listing index         P:{t}:rix
    KEYS[3]  reservation records       P:{t}:rs
    KEYS[4]  reservation log stream    P:{t}:rlog
    KEYS[5]  expiry index              P:{t}:exp
    KEYS[6]  live idempotency index    P:{t}:ik
    ARGV[1]  batch size

  Output: {moved, left} (left = old index entries still to move)
]]
--- @include "common"
--- @include "reservation"

local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #'tenant')
local tenant = tenant_of_key(KEYS[1])
local moved = 0
for _, rid in ipairs(redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[1]) - 1)) do
  local key = prefix .. 'r:' .. rid
  local short = string.match(rid, '_([^_]+)$') or rid
  local flat = redis.call('HGETALL', key)
  if #flat > 0 and redis.call('HEXISTS', KEYS[3], short) == 0 then
    local o = {}
    for i = 1, #flat, 2 do o[flat[i]] = flat[i + 1] end
    local created = num(o.created)
    local f = {
      status = o.status, action = o.action, unit = o.unit, estimate = num(o.estimate),
      scope_path = o.scope_path or ('tenant:' .. tenant), mask = o.mask, created = created,
      expires = num(o.expires), grace = num(o.grace), policy = o.policy or 'ALLOW_IF_AVAILABLE',
      ext = num(o.ext), idem = o.idem, subject = o.subject, meta = o.meta,
      committed = o.committed and num(o.committed) or nil, finalized = o.finalized and num(o.finalized) or nil,
      ckey = o.ckey, chash = o.chash, cres = o.cres, cmeta = o.cmeta,
      rkey = o.rkey, rhash = o.rhash, rres = o.rres and num(o.rres) or nil, reason = o.reason,
      expired_at = o.expired_at and num(o.expired_at) or nil,
    }
    -- The old idempotency record carries the payload hash and the reserve-time expiry.
    local ikey = o.idem and (prefix .. 'i:reserve:' .. o.idem)
    local idem = ikey and redis.call('HMGET', ikey, 'h', 'r', 'x') or {}
    if idem[1] and idem[3] == rid then f.hash = string.sub(idem[1], 1, 22) end
    local raw = res_new(tenant, f)
    if idem[2] and idem[3] == rid then
      local first = {}
      for v in string.gmatch(idem[2], '[^\31]+') do first[#first + 1] = v end
      local x0 = num(first[3]) - created
      if first[3] and x0 ~= raw.x then raw.y = x0 end
    end
    res_store(KEYS[3], short, raw)
    log_reservation(KEYS[4], created, short)
    -- An ACTIVE reservation is due at expires + grace whatever the old index said (a sweep of
    -- the new version may have dropped an entry it could not resolve).
    redis.call('ZREM', KEYS[5], rid)
    if o.status == 'ACTIVE' then redis.call('ZADD', KEYS[5], f.expires + f.grace, short) end
    if f.hash then
      redis.call('HSET', KEYS[6], idem_field(o.idem), short)
      redis.call('DEL', ikey)
    end
    moved = moved + 1
  end
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[2], rid)
end
return {moved, redis.call('ZCARD', KEYS[2])}
