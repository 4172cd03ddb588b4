-- Helpers for scripts that act on an existing reservation (commit, release, extend, expire).

local RES_FIELDS = {'status', 'tenant', 'unit', 'estimate', 'scope_path', 'mask', 'expires',
  'grace', 'policy', 'ext', 'ckey', 'chash', 'cres', 'rkey', 'rhash', 'rres', 'created', 'subject', 'action'}

local function load_reservation(key)
  local v = redis.call('HMGET', key, unpack(RES_FIELDS))
  if not v[1] then return nil end
  local r = {}
  for i, f in ipairs(RES_FIELDS) do r[f] = v[i] end
  r.estimate = num(r.estimate)
  r.expires = num(r.expires)
  r.grace = num(r.grace)
  r.created = num(r.created)
  r.ext = num(r.ext)
  return r
end

-- The ledgers this reservation holds budget on: derived scopes whose mask bit is '1'. Their keys
-- share the tenant's hash tag, so the script stays within one Cluster slot.
local function held_ledgers(tenant_prefix, r)
  local out = {}
  local scopes = prefixes(r.scope_path)
  for i = 1, #scopes do
    if string.sub(r.mask, i, i) == '1' then
      local key = tenant_prefix .. 'b:' .. scopes[i] .. ':' .. r.unit
      local l = load_ledger(key)
      if l then
        l.scope = scopes[i]
        out[#out + 1] = l
      end
    end
  end
  return out
end

-- The checks commit, release and extend share once replay detection is done: a closed tenant
-- wins over the reservation's own state, then terminal states. nil when the reservation is live.
local function settle_guard(tenant_key, r, now)
  local tstate = tenant_state(tenant_key)
  if tstate == 'MALFORMED' then return {'INTERNAL_ERROR', now, 'tenant record is malformed'} end
  if tstate == 'CLOSED' then return {'TENANT_CLOSED', now} end
  if r.status == 'EXPIRED' then return {'RESERVATION_EXPIRED', now} end
  if r.status ~= 'ACTIVE' then return {'RESERVATION_FINALIZED', now, r.status} end
  return nil
end
