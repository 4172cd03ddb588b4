--[[
  Updates a ledger's overdraft limit, commit overage policy and metadata (ACTIVE or FROZEN).

  Input:
    KEYS[1]  tenant record hash   KEYS[2] ledger hash   KEYS[3] outbox stream
    ARGV[1]  overdraft limit or ''   ARGV[2] overage policy or ''   ARGV[3] metadata JSON or ''
    ARGV[4]  updated_at (ms)   ARGV[5] event id base   ARGV[6] request id   ARGV[7] trace id
    ARGV[8]  actor JSON        ARGV[9] tenant id       ARGV[10] scope       ARGV[11] unit

  Output: {'OK'} | {'TENANT_CLOSED'} | {'BUDGET_NOT_FOUND'} | {'BUDGET_CLOSED'}
]]
--- @include "common"

if redis.call('HGET', KEYS[1], 'status') == 'CLOSED' then return {'TENANT_CLOSED'} end
local l = load_ledger(KEYS[2])
if not l then return {'BUDGET_NOT_FOUND'} end
if l.status == 'CLOSED' then return {'BUDGET_CLOSED'} end
local fields = {'updated_at', ARGV[4]}
local limit = l.overdraft_limit
if ARGV[1] ~= '' then
  limit = tonumber(ARGV[1])
  fields[#fields + 1] = 'overdraft_limit'
  fields[#fields + 1] = fmt(limit)
  -- A changed limit re-decides the debt half of over-limit; a capping flag without debt stays.
  local over = l.debt > limit or (l.over_limit and l.debt == 0)
  fields[#fields + 1] = 'over_limit'
  fields[#fields + 1] = over and '1' or '0'
end
if ARGV[2] ~= '' then
  fields[#fields + 1] = 'commit_overage_policy'
  fields[#fields + 1] = ARGV[2]
end
if ARGV[3] ~= '' then
  fields[#fields + 1] = 'metadata'
  fields[#fields + 1] = ARGV[3]
end
redis.call('HSET', KEYS[2], unpack(fields))
local ctx = { now = now_ms(), event_base = ARGV[5], request_id = ARGV[6], trace_id = ARGV[7],
  actor = ARGV[8], tenant = ARGV[9], source = 'cycles-admin' }
emit(KEYS[3], ctx, 'budget.updated', 'budget', ARGV[10], jobj({
  'scope', js(ARGV[10]), 'unit', js(ARGV[11]), 'overdraft_limit', fmt(limit),
  'commit_overage_policy', ARGV[2] ~= '' and js(ARGV[2]) or nil,
}))
return {'OK'}
