-- Shared helpers, inlined by the script loader where a script says  --- @include "common"
-- Amounts are kept as integer strings in Redis; Lua numbers are doubles, exact up to 2^53, and
-- every number written back goes through fmt() so it is never rendered in exponent form.

local MAX_AMOUNT = 9007199254740991

local function fmt(n)
  return string.format('%.0f', n)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function num(v)
  if v == false or v == nil or v == '' then return 0 end
  return tonumber(v) or 0
end

-- ISO-8601 UTC text of an epoch-ms instant (days-to-civil conversion, proleptic Gregorian).
local function iso_ms(ms)
  local secs = math.floor(ms / 1000)
  local frac = ms - secs * 1000
  local days = math.floor(secs / 86400)
  local rem = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60, frac)
end

local function js(s)
  return cjson.encode(s)
end

-- A JSON object from alternating key, raw-JSON-value arguments (values already encoded). A nil
-- value leaves its key out. Callers build `parts` with nils in it, and the length operator is
-- undefined on a table with holes, so the bound is table.maxn (the largest index actually set).
local function jobj(parts)
  local out = {}
  for i = 1, table.maxn(parts), 2 do
    if parts[i + 1] ~= nil then
      out[#out + 1] = js(parts[i]) .. ':' .. parts[i + 1]
    end
  end
  return '{' .. table.concat(out, ',') .. '}'
end

local function jamount(unit, n)
  return '{"unit":' .. js(unit) .. ',"amount":' .. fmt(n) .. '}'
end

-- Splits a scope path into its cumulative prefixes, shortest first.
local function prefixes(path)
  local out = {}
  local acc = nil
  for seg in string.gmatch(path, '[^/]+') do
    if acc then acc = acc .. '/' .. seg else acc = seg end
    out[#out + 1] = acc
  end
  return out
end

-- Reads the tenant guard state. Returns 'NONE', 'OK', 'CLOSED' or 'MALFORMED'.
local function tenant_state(tenant_key)
  local status = redis.call('HGET', tenant_key, 'status')
  if not status then
    if redis.call('EXISTS', tenant_key) == 1 then return 'MALFORMED' end
    return 'NONE'
  end
  if status == 'CLOSED' then return 'CLOSED' end
  if status == 'ACTIVE' or status == 'SUSPENDED' then return 'OK' end
  return 'MALFORMED'
end

local LEDGER_FIELDS = {'allocated', 'spent', 'reserved', 'debt', 'overdraft_limit', 'over_limit', 'status'}

-- Loads a ledger hash; nil when the budget does not exist.
local function load_ledger(key)
  local v = redis.call('HMGET', key, unpack(LEDGER_FIELDS))
  if not v[1] then return nil end
  local l = {
    key = key,
    allocated = num(v[1]), spent = num(v[2]), reserved = num(v[3]), debt = num(v[4]),
    overdraft_limit = num(v[5]), over_limit = (v[6] == '1'), status = v[7] or 'ACTIVE',
  }
  l.remaining = l.allocated - l.spent - l.reserved - l.debt
  return l
end

-- Appends one event to the tenant outbox. The relay turns it into a stored event and deliveries.
-- ctx.trace_id is '<32 hex>' or '<32 hex>-<2 hex>' when the request carried a valid traceparent
-- (its flags then travel to the webhook traceparent). The first event of a script run also
-- publishes the tenant id on '<prefix>:outbox-notify' so a relay picks the outbox up at once.
local event_seq = 0
local function emit(outbox, ctx, event_type, category, scope, data_json)
  event_seq = event_seq + 1
  local event_id = ctx.event_base .. string.format('%02x', event_seq)
  local trace_id, trace_flags, inbound = ctx.trace_id or '', nil, nil
  if #trace_id == 35 then
    trace_flags = string.sub(trace_id, 34, 35)
    trace_id = string.sub(trace_id, 1, 32)
    inbound = 'true'
  end
  local parts = {
    'event_id', js(event_id),
    'event_type', js(event_type),
    'category', js(category),
    'timestamp_ms', fmt(ctx.now),
    'tenant_id', js(ctx.tenant),
    'scope', scope and js(scope) or nil,
    'actor', ctx.actor,
    'source', js(ctx.source or 'cycles-server'),
    'data', data_json,
    'correlation_id', (ctx.correlation_id and ctx.correlation_id ~= '') and js(ctx.correlation_id) or nil,
    'request_id', ctx.request_id ~= '' and js(ctx.request_id) or nil,
    'trace_id', trace_id ~= '' and js(trace_id) or nil,
    'trace_flags', trace_flags and js(trace_flags) or nil,
    'traceparent_inbound_valid', inbound,
  }
  if event_seq == 1 then
    local prefix = string.match(outbox, '^(.-):{')
    if prefix then redis.call('PUBLISH', prefix .. ':outbox-notify', ctx.tenant) end
  end
  redis.call('XADD', outbox, '*', 'event', jobj(parts))
  return event_id
end

-- Budget-state events that follow a spend (commit or direct event) on one ledger.
local function emit_spend_events(outbox, ctx, scope, unit, before, after, reservation_id)
  if after.debt > before.debt then
    emit(outbox, ctx, 'budget.debt_incurred', 'budget', scope, jobj({
      'scope', js(scope), 'unit', js(unit), 'reservation_id', reservation_id and js(reservation_id) or 'null',
      'debt_incurred', fmt(after.debt - before.debt),
      'total_debt', fmt(after.debt), 'overdraft_limit', fmt(after.overdraft_limit),
    }))
  end
  if after.over_limit and not before.over_limit then
    local util = 'null'
    if after.overdraft_limit > 0 then util = string.format('%.6f', after.debt / after.overdraft_limit) end
    emit(outbox, ctx, 'budget.over_limit_entered', 'budget', scope, jobj({
      'scope', js(scope), 'unit', js(unit), 'debt', fmt(after.debt),
      'overdraft_limit', fmt(after.overdraft_limit), 'is_over_limit', 'true', 'debt_utilization', util,
    }))
  end
  if before.remaining > 0 and after.remaining <= 0 then
    emit(outbox, ctx, 'budget.exhausted', 'budget', scope, jobj({
      'scope', js(scope), 'unit', js(unit), 'allocated', fmt(after.allocated),
      'remaining', fmt(after.remaining), 'spent', fmt(after.spent), 'reserved', fmt(after.reserved),
    }))
  end
end
