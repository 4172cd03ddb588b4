--[[
  Freezes (ACTIVE -> FROZEN) or unfreezes (FROZEN -> ACTIVE) one ledger.

  Input:
    KEYS[1]  tenant record hash   KEYS[2] ledger hash   KEYS[3] outbox stream
    ARGV[1]  target status ('FROZEN' | 'ACTIVE')   ARGV[2] updated_at (ms)   ARGV[3] reason or ''
    ARGV[4]  event id base   ARGV[5] request id   ARGV[6] trace id   ARGV[7] actor JSON
    ARGV[8]  tenant id       ARGV[9] scope        ARGV[10] unit

  Output: {'OK'} | {'TENANT_CLOSED'} | {'BUDGET_NOT_FOUND'} | {'BUDGET_CLOSED'}
          | {'INVALID_TRANSITION', message}
]]
--- @include "common"

if redis.call('HGET', KEYS[1], 'status') == 'CLOSED' then return {'TENANT_CLOSED'} end
local status = redis.call('HGET', KEYS[2], 'status')
if not status then return {'BUDGET_NOT_FOUND'} end
if status == 'CLOSED' then return {'BUDGET_CLOSED'} end
local target = ARGV[1]
if target == 'FROZEN' and status == 'FROZEN' then return {'INVALID_TRANSITION', 'Budget is already frozen'} end
if target == 'ACTIVE' and status ~= 'FROZEN' then return {'INVALID_TRANSITION', 'Budget is not frozen'} end
redis.call('HSET', KEYS[2], 'status', target, 'updated_at', ARGV[2])
local ctx = { now = now_ms(), event_base = ARGV[4], request_id = ARGV[5], trace_id = ARGV[6],
  actor = ARGV[7], tenant = ARGV[8], source = 'cycles-admin' }
emit(KEYS[3], ctx, target == 'FROZEN' and 'budget.frozen' or 'budget.unfrozen', 'budget', ARGV[9], jobj({
  'scope', js(ARGV[9]), 'unit', js(ARGV[10]), 'operation', js('STATUS_CHANGE'),
  'previous_status', js(status), 'new_status', js(target),
  'reason', ARGV[3] ~= '' and js(ARGV[3]) or nil,
}))
return {'OK'}
