--[[
  One bounded batch of a tenant's close cascade (ADR 0015), in the tenant's slot. Works through
  three phases in a fixed order and stops when the batch is used up:
    1. reservations: every ACTIVE reservation becomes RELEASED (reason tenant_closed); its hold
       leaves each held ledger (as a release would) and is added to that ledger's entry in the
       released-amount hash;
    2. budgets (only once no ACTIVE reservation is left): ACTIVE|FROZEN -> CLOSED, closed_at
       stamped, any reserved remainder drained into remaining; emits
       reservation.released_via_tenant_cascade (when the ledger had anything held at the close)
       and budget.closed_via_tenant_cascade;
    3. webhook subscriptions (only once the budgets are done): ACTIVE|PAUSED -> DISABLED (rev
       bumped, so a PATCH that read the old record retries); emits
       webhook.disabled_via_tenant_cascade.
  Every transition is a compare-and-set on the child's own status, so a child that is already
  terminal is skipped without an event: re-running any batch, or the whole cascade, emits nothing
  twice. The phase order guarantees that no ledger is CLOSED while a reservation still holds on
  it, so the expiry sweep can never return a hold to a drained ledger.

  Input:
    KEYS[1]  tenant record hash        P:{t}:tenant (its prefix locates the child records)
    KEYS[2]  expiry index              P:{t}:exp    (exactly the ACTIVE reservations)
    KEYS[3]  budget listing index      P:{t}:budgets ("scope|unit", score 0)
    KEYS[4]  subscription index        P:{t}:whs
    KEYS[5]  outbox stream             P:{t}:outbox
    KEYS[6]  cascade state hash        P:{t}:cascade
    KEYS[7]  released-amount hash      P:{t}:cascade:released
    KEYS[8]  reservation records       P:{t}:rs
    ARGV[1]  batch size (children examined in this call)
    ARGV[2]  budget cursor: last "scope|unit" examined by this run, '' to start
    ARGV[3]  subscription cursor: last subscription id examined by this run, '' to start
    ARGV[4]  event id base   ARGV[5] request id   ARGV[6] trace id   ARGV[7] actor JSON
    ARGV[8]  tenant id       ARGV[9] now, ISO-8601 (subscription updated_at)

  Output: {'NOT_CLOSED'}
        | {'OK', 'MORE' | 'DONE', budget cursor, subscription cursor, change JSON...}
  Each change names one child this call transitioned: {kind, id, prior, new, scope?, unit?,
  name?, released?} (released as an integer string).
]]
--- @include "common"
--- @include "reservation"
--- @include "cascade"

if redis.call('HGET', KEYS[1], 'status') ~= 'CLOSED' then return {'NOT_CLOSED'} end

local batch = tonumber(ARGV[1])
local bcursor = ARGV[2]
local wcursor = ARGV[3]
local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #'tenant')
local ctx = cascade_ctx(KEYS[6], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
local now = ctx.now
local used = 0
local changes = {}

local function finish(kind)
  local out = {'OK', kind, bcursor, wcursor}
  for _, c in ipairs(changes) do out[#out + 1] = c end
  return out
end

-- 1. Reservations. The expiry index holds exactly the ACTIVE ones; every entry examined leaves it.
local live = redis.call('ZRANGE', KEYS[2], 0, batch - 1)
for _, short in ipairs(live) do
  used = used + 1
  local r = load_reservation(KEYS[8], short)
  if r and r.status == 'ACTIVE' then
    for _, l in ipairs(held_ledgers(prefix, r)) do
      -- A CLOSED ledger was drained whole; taking the hold off it again would count it twice.
      if l.status ~= 'CLOSED' then
        redis.call('HINCRBY', l.key, 'reserved', fmt(-r.estimate))
        redis.call('HINCRBY', KEYS[7], l.scope .. '|' .. r.unit, fmt(r.estimate))
      end
    end
    update_reservation(KEYS[8], short, r, { status = 'RELEASED', finalized = now, reason = 'tenant_closed' })
  end
  redis.call('ZREM', KEYS[2], short)
end
if redis.call('ZCARD', KEYS[2]) > 0 then return finish('MORE') end

-- 2. Budgets, in index order from this run's cursor.
local budgets_done = false
if used < batch then
  local want = batch - used
  local members = redis.call('ZRANGEBYLEX', KEYS[3], bcursor == '' and '-' or '(' .. bcursor, '+', 'LIMIT', 0, want)
  for _, m in ipairs(members) do
    used = used + 1
    bcursor = m
    local sep = string.find(m, '|[^|]*$')
    local scope = string.sub(m, 1, sep - 1)
    local unit = string.sub(m, sep + 1)
    local lkey = prefix .. 'b:' .. scope .. ':' .. unit
    local v = redis.call('HMGET', lkey, 'status', 'reserved', 'ledger_id')
    if v[1] and v[1] ~= 'CLOSED' then
      local prior = v[1]
      local ledger_id = v[3] or m
      local released = num(redis.call('HGET', KEYS[7], m))
      local residual = num(v[2])
      local fields = {'status', 'CLOSED', 'closed_at', fmt(now), 'updated_at', fmt(now)}
      if residual > 0 then
        released = released + residual
        fields[#fields + 1] = 'reserved'
        fields[#fields + 1] = '0'
      end
      redis.call('HSET', lkey, unpack(fields))
      if released > 0 then
        emit_cascade(KEYS[5], ctx, 'reservation.released_via_tenant_cascade', 'reservation', scope, {
          'ledger_id', js(ledger_id), 'scope', js(scope), 'unit', js(unit),
          'prior_status', js(prior), 'released_amount', fmt(released),
        })
      end
      emit_cascade(KEYS[5], ctx, 'budget.closed_via_tenant_cascade', 'budget', scope, {
        'ledger_id', js(ledger_id), 'scope', js(scope), 'unit', js(unit),
        'prior_status', js(prior), 'new_status', js('CLOSED'),
      })
      changes[#changes + 1] = cjson.encode({ kind = 'budget', id = ledger_id, prior = prior, new = 'CLOSED',
        scope = scope, unit = unit, released = fmt(released) })
    end
    redis.call('HDEL', KEYS[7], m)
  end
  budgets_done = #members < want
end
if not budgets_done then return finish('MORE') end

-- 3. Webhook subscriptions owned by the tenant, in index order from this run's cursor.
local hooks_done = false
if used < batch then
  local want = batch - used
  local ids = redis.call('ZRANGEBYLEX', KEYS[4], wcursor == '' and '-' or '(' .. wcursor, '+', 'LIMIT', 0, want)
  for _, id in ipairs(ids) do
    used = used + 1
    wcursor = id
    local wkey = prefix .. 'wh:' .. id
    local v = redis.call('HMGET', wkey, 'status', 'name', 'rev')
    if v[1] == 'ACTIVE' or v[1] == 'PAUSED' then
      redis.call('HSET', wkey, 'status', 'DISABLED', 'updated_at', ARGV[9], 'rev', fmt(num(v[3]) + 1))
      local name = v[2] or nil
      emit_cascade(KEYS[5], ctx, 'webhook.disabled_via_tenant_cascade', 'webhook', nil, {
        'subscription_id', js(id), 'name', name and js(name) or nil,
        'prior_status', js(v[1]), 'new_status', js('DISABLED'),
      })
      changes[#changes + 1] = cjson.encode({ kind = 'webhook_subscription', id = id, prior = v[1], new = 'DISABLED', name = name })
    end
  end
  hooks_done = #ids < want
end
if not hooks_done then return finish('MORE') end
return finish('DONE')
