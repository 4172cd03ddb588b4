--[[
  Evaluates a reservation request and, when live and allowed, holds the estimate on every
  budgeted derived scope. Also serves dry_run and /v1/decide (evaluation only, no hold).

  Input:
    KEYS[1]  tenant record hash              P:{t}:tenant
    KEYS[2]  dry-run idempotency record      P:{t}:i:<reserve|decide>:<key>
    KEYS[3]  reservation records hash        P:{t}:rs    (short id -> record, ADR 0019)
    KEYS[4]  reservation log stream          P:{t}:rlog  (creation order, listing)
    KEYS[5]  expiry index                    P:{t}:exp
    KEYS[6]  outbox stream                   P:{t}:outbox
    KEYS[7]  scope -> units hash             P:{t}:bunits
    KEYS[8]  live idempotency index          P:{t}:ik    (idem_field(key) -> short id)
    KEYS[9..] ledger of each derived scope in the requested unit, canonical order

    ARGV[1]  reservation short id (used only when a live reservation is created)
    ARGV[2]  payload hash (canonical JSON of the request body)
    ARGV[3]  mode: 'live' | 'dry' (dry_run=true) | 'decide'
    ARGV[4]  estimate amount
    ARGV[5]  unit
    ARGV[6]  requested ttl_ms ('' = tenant default or 60000)
    ARGV[7]  grace_period_ms
    ARGV[8]  requested overage policy ('' = tenant default or ALLOW_IF_AVAILABLE)
    ARGV[9]  subject JSON        ARGV[10] action JSON       ARGV[11] metadata JSON or ''
    ARGV[12] scope path          ARGV[13] idempotency key   ARGV[14] minimum idempotency TTL ms
    ARGV[15] event id base       ARGV[16] request id        ARGV[17] trace id
    ARGV[18] actor JSON          ARGV[19] tenant id
    ARGV[20] '1' when the subject must be stored (it cannot be rebuilt from the scope path)
    ARGV[21] idem_field(ARGV[13]), computed by the caller (the same digest; saves the script
             about 4 µs of Lua per call)

  Output (array):
    {'OK', now, 'ALLOW', rid, expires_at, created_at}             live reservation created
    {'OK', now, decision, reason_code}                            dry evaluation
    {'REPLAY', now, <stored result fields...>, reservation status} same key, same payload
    {'ID_COLLISION', now}                                         short id taken: retry with another
    {<ERROR_CODE>, now, scope, detail...}                         refusal, nothing held

  Idempotency: a live reservation is its own idempotency record (its key and payload hash are
  fields of the record, found through P:{t}:ik) and answers replays for as long as the record is
  kept; dry runs and decide keep a separate record with a TTL.

  Side effects: ledger reserved += estimate on each budgeted scope; reservation record; log,
  expiry and idempotency index entries; reservation.denied event on a budget denial.
]]
--- @include "common"
--- @include "reservation"

local now = now_ms()
-- ARGV[3] 'decide' is a dry evaluation whose denial event names the first affected scope.
local decide = ARGV[3] == 'decide'
local mode = decide and 'dry' or ARGV[3]
local estimate = tonumber(ARGV[4])
local unit = ARGV[5]
local ctx = {
  now = now, event_base = ARGV[15], request_id = ARGV[16], trace_id = ARGV[17],
  actor = ARGV[18], tenant = ARGV[19],
}
local SEP = '\31'

-- 1. Idempotency: replay or mismatch before anything else. Live reservations answer from their
-- record; dry runs and decide from their own record.
local live_hash = string.sub(ARGV[2], 1, 22)
local ikf = nil
if not decide then
  ikf = ARGV[21]
  local short0 = redis.call('HGET', KEYS[8], ikf)
  local r0 = short0 and load_reservation(KEYS[3], short0)
  -- A mapping whose record was purged (or, at 2^-72 odds, another key's) is overwritten below.
  if r0 and r0.idem == ARGV[13] then
    if r0.hash ~= live_hash then return {'IDEMPOTENCY_MISMATCH', now} end
    return {'REPLAY', now, 'ALLOW', full_rid(ctx.tenant, short0), fmt(original_expires(r0)), fmt(r0.created), r0.status}
  end
end
local idem = redis.call('HMGET', KEYS[2], 'h', 'r')
if idem[1] then
  if idem[1] ~= ARGV[2] then return {'IDEMPOTENCY_MISMATCH', now} end
  local out = {'REPLAY', now}
  for field in string.gmatch(idem[2], '[^' .. SEP .. ']+') do out[#out + 1] = field end
  out[#out + 1] = ''
  return out
end

local function remember(result, ttl_ms)
  redis.call('HSET', KEYS[2], 'h', ARGV[2], 'r', table.concat(result, SEP))
  redis.call('PEXPIRE', KEYS[2], ttl_ms)
end

local min_idem_ttl = tonumber(ARGV[14])
local scopes = prefixes(ARGV[12])

local function denied_event(reason, scope, remaining)
  -- The event names the request's scope path (reserve) or the first affected scope (decide),
  -- as the reference runtime does, not the scope that refused.
  if decide then
    scope = scopes[1]
    remaining = nil
  else
    scope = ARGV[12]
  end
  emit(KEYS[6], ctx, 'reservation.denied', 'reservation', scope, jobj({
    'scope', js(scope), 'reason_code', js(reason), 'requested_amount', fmt(estimate),
    'unit', js(unit), 'remaining', remaining and fmt(remaining) or nil,
    'action', ARGV[10], 'subject', ARGV[9], 'dry_run', mode == 'dry' and 'true' or 'false',
  }))
end

local function deny(reason, scope, remaining)
  denied_event(reason, scope, remaining)
  if mode == 'dry' then
    local result = {'DENY', reason}
    remember(result, min_idem_ttl)
    return {'OK', now, 'DENY', reason}
  end
  return {reason, now, scope or '', remaining and fmt(remaining) or ''}
end

-- 2. Closed-tenant guard (a replay above already won over it). The tenant's runtime defaults
-- are read in the same call.
local t = redis.call('HMGET', KEYS[1], 'status', 'default_reservation_ttl_ms', 'max_reservation_ttl_ms',
  'default_commit_overage_policy')
local tstatus = t[1]
local tstate = 'OK'
if not tstatus then
  if redis.call('EXISTS', KEYS[1]) == 1 then tstate = 'MALFORMED' else tstate = 'NONE' end
elseif tstatus == 'CLOSED' then tstate = 'CLOSED'
elseif tstatus ~= 'ACTIVE' and tstatus ~= 'SUSPENDED' then tstate = 'MALFORMED' end
if tstate == 'MALFORMED' then return {'INTERNAL_ERROR', now, 'tenant record is malformed'} end
if tstate == 'CLOSED' then
  if mode == 'dry' then return deny('TENANT_CLOSED', scopes[1], nil) end
  return {'TENANT_CLOSED', now, scopes[1]}
end

-- 3. Walk the derived scopes in canonical order; scopes without a ledger in this unit are skipped.
local ledgers = {}
local mask = {}
for i = 1, #scopes do
  local l = load_ledger(KEYS[8 + i])
  if l then
    l.scope = scopes[i]
    ledgers[#ledgers + 1] = l
    mask[i] = '1'
    if l.status == 'FROZEN' then return deny('BUDGET_FROZEN', l.scope, l.remaining) end
    if l.status == 'CLOSED' then return deny('BUDGET_CLOSED', l.scope, l.remaining) end
    if l.over_limit then return deny('OVERDRAFT_LIMIT_EXCEEDED', l.scope, l.remaining) end
    if l.debt > 0 and l.overdraft_limit == 0 then return deny('DEBT_OUTSTANDING', l.scope, l.remaining) end
    if l.remaining < estimate then return deny('BUDGET_EXCEEDED', l.scope, l.remaining) end
  else
    mask[i] = '0'
  end
end

if #ledgers == 0 then
  -- A budget in another unit makes this a client error; no budget at all is "not found".
  for i = 1, #scopes do
    local units = redis.call('HGET', KEYS[7], scopes[i])
    if units and units ~= '' then return {'UNIT_MISMATCH', now, scopes[i], units} end
  end
  if mode == 'dry' then
    local result = {'DENY', 'BUDGET_NOT_FOUND'}
    remember(result, min_idem_ttl)
    return {'OK', now, 'DENY', 'BUDGET_NOT_FOUND'}
  end
  return {'NOT_FOUND', now, ARGV[12]}
end

if mode == 'dry' then
  local result = {'ALLOW', '-'}
  remember(result, min_idem_ttl)
  return {'OK', now, 'ALLOW', '-'}
end

-- 4. Live: resolve TTL and overage policy from the request and the tenant defaults.
local ttl = tonumber(ARGV[6]) or tonumber(t[2]) or 60000
local max_ttl = tonumber(t[3]) or 3600000
if ttl > max_ttl then ttl = max_ttl end
local grace = tonumber(ARGV[7])
local policy = ARGV[8]
if policy == '' then policy = t[4] or 'ALLOW_IF_AVAILABLE' end

local rid = ARGV[1]
if redis.call('HEXISTS', KEYS[3], rid) == 1 then return {'ID_COLLISION', now} end
local expires = now + ttl
for _, l in ipairs(ledgers) do
  redis.call('HINCRBY', l.key, 'reserved', fmt(estimate))
end
res_store(KEYS[3], rid, res_new(ctx.tenant, {
  status = 'ACTIVE', action = ARGV[10], unit = unit, estimate = estimate, scope_path = ARGV[12],
  mask = table.concat(mask), created = now, expires = expires, grace = grace, policy = policy,
  ext = 0, idem = ARGV[13], hash = live_hash,
  subject = ARGV[20] == '1' and ARGV[9] or nil, meta = ARGV[11] ~= '' and ARGV[11] or nil,
}))
log_reservation(KEYS[4], now, rid)
redis.call('ZADD', KEYS[5], expires + grace, rid)
redis.call('HSET', KEYS[8], ikf, rid)
return {'OK', now, 'ALLOW', full_rid(ctx.tenant, rid), fmt(expires), fmt(now)}
