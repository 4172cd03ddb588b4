-- Reservation records (ADR 0019). Every reservation of a tenant is one field of the tenant's hash
-- P:{t}:rs, named by the reservation's short id (the random tail of `rsv_<tenant>_<short>`), whose
-- value is a MessagePack map with one-letter keys. Scripts work on the long names below; only
-- this file knows the codes. src/store/reservation-codec.ts decodes the same format.

local RES_CODES = {
  status = 's', action = 'a', unit = 'u', estimate = 'e', mask = 'm', created = 'c', grace = 'g',
  ext = 'n', idem = 'k', hash = 'h', subject = 'j', meta = 'd',
  committed = 'C', finalized = 'f', ckey = 'K', chash = 'H', cres = 'R', cmeta = 'D',
  rkey = 'L', rhash = 'M', rres = 'N', reason = 'W', expired_at = 'X',
}
-- Stored in derived form: scope path (p = tail after the tenant segment, or P = whole path),
-- expires (x = expires - created; y = the first x, kept once extended, for reserve replays),
-- policy (o = one-letter code).
local POLICY_CODE = { REJECT = 'R', ALLOW_IF_AVAILABLE = 'A', ALLOW_WITH_OVERDRAFT = 'O' }
local POLICY_NAME = { R = 'REJECT', A = 'ALLOW_IF_AVAILABLE', O = 'ALLOW_WITH_OVERDRAFT' }

-- The tenant id inside a tenant-slot key name P:{t}:...
local function tenant_of_key(key)
  return string.match(key, '{(.*)}:')
end

-- The index field of an idempotency key in P:{t}:ik: 72 bits of its SHA-1 as 12 base64url
-- characters (src/store/reservation-codec.ts computes the same).
local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
local function idem_field(idem)
  local hex = string.sub(redis.sha1hex(idem), 1, 18)
  local out = {}
  for i = 1, 18, 3 do
    local v = tonumber(string.sub(hex, i, i + 2), 16)
    local hi = math.floor(v / 64) + 1
    local lo = v % 64 + 1
    out[#out + 1] = string.sub(B64, hi, hi) .. string.sub(B64, lo, lo)
  end
  return table.concat(out)
end

local function res_decode(raw, tenant)
  local r = { _raw = raw, tenant = tenant }
  for name, code in pairs(RES_CODES) do r[name] = raw[code] end
  if raw.P then
    r.scope_path = raw.P
  elseif raw.p and raw.p ~= '' then
    r.scope_path = 'tenant:' .. tenant .. '/' .. raw.p
  else
    r.scope_path = 'tenant:' .. tenant
  end
  r.estimate = num(raw.e)
  r.created = num(raw.c)
  r.expires = r.created + num(raw.x)
  r.grace = num(raw.g)
  r.ext = num(raw.n)
  r.policy = POLICY_NAME[raw.o] or raw.o or 'ALLOW_IF_AVAILABLE'
  r.mask = raw.m or ''
  return r
end

-- The record of short id `short` in the tenant's reservation hash, or nil.
local function load_reservation(rs_key, short)
  local v = redis.call('HGET', rs_key, short)
  if not v then return nil end
  return res_decode(cmsgpack.unpack(v), tenant_of_key(rs_key))
end

-- A new record's raw map from long-named values (scope_path, expires and policy in long form).
local function res_new(tenant, f)
  local raw = {}
  for name, code in pairs(RES_CODES) do
    if f[name] ~= nil then raw[code] = f[name] end
  end
  local head = 'tenant:' .. tenant
  if f.scope_path == head then
    raw.p = ''
  elseif string.sub(f.scope_path, 1, #head + 1) == head .. '/' then
    raw.p = string.sub(f.scope_path, #head + 2)
  else
    raw.P = f.scope_path
  end
  raw.x = f.expires - f.created
  raw.o = POLICY_CODE[f.policy] or f.policy
  return raw
end

local function res_store(rs_key, short, raw)
  redis.call('HSET', rs_key, short, cmsgpack.pack(raw))
end

-- Applies long-named changes to a loaded record and writes it back. `expires` is re-based on
-- created; the first relative expiry is kept (y) so a replayed reserve answers what it first did.
local function update_reservation(rs_key, short, r, changes)
  local raw = r._raw
  for name, value in pairs(changes) do
    if name == 'expires' then
      if raw.y == nil then raw.y = raw.x end
      raw.x = value - r.created
      r.expires = value
    else
      raw[RES_CODES[name]] = value
      r[name] = value
    end
  end
  res_store(rs_key, short, raw)
end

-- Appends a reservation to the tenant's log, entry id = its creation time. A clock behind the log's
-- last entry (a failover to a replica with a slower clock) falls back to the next id the stream
-- allows.
local function log_reservation(log_key, created, short)
  local logged = redis.pcall('XADD', log_key, fmt(created) .. '-*', 'r', short)
  if type(logged) == 'table' and logged.err then redis.call('XADD', log_key, '*', 'r', short) end
end

-- The reserve-time expires_at (before any extension).
local function original_expires(r)
  return r.created + num(r._raw.y or r._raw.x)
end

-- The public reservation id of a short id.
local function full_rid(tenant, short)
  return 'rsv_' .. tenant .. '_' .. short
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
