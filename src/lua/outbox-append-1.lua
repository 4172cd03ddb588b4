--[[
  Appends one event to a tenant outbox, for a mutation whose record lives outside the tenant's
  slot (API keys are global records): the record is written first, then this script, so a crash
  in between loses the event, never invents one (ADR 0014 notes the gap).

  Input:
    KEYS[1]  outbox stream   P:{t}:outbox
    ARGV[1]  event id base   ARGV[2] request id   ARGV[3] trace id   ARGV[4] actor JSON
    ARGV[5]  tenant id       ARGV[6] source       ARGV[7] event type ARGV[8] category
    ARGV[9]  scope ('' = none)   ARGV[10] correlation id ('' = none)   ARGV[11] data JSON

  Output: {'OK', event_id}
]]
--- @include "common"

local ctx = { now = now_ms(), event_base = ARGV[1], request_id = ARGV[2], trace_id = ARGV[3], actor = ARGV[4],
  tenant = ARGV[5], source = ARGV[6], correlation_id = ARGV[10] }
local id = emit(KEYS[1], ctx, ARGV[7], ARGV[8], ARGV[9] ~= '' and ARGV[9] or nil, ARGV[11])
return {'OK', id}
