--[[
  Records the close cascade's progress on one API key, in the tenant's slot (ADR 0015). An API
  key lives in a global hash (another slot), so revoking it cannot share a script with its event;
  instead the tenant slot keeps one entry per key, moved through two compare-and-set steps around
  the revocation (api-key-cascade-revoke-1):
    claim   before revoking: an ACTIVE key is recorded as 'pending:ACTIVE';
    finish  after revoking: a pending entry emits api_key.revoked_via_tenant_cascade (when the
            caller confirms the cascade revoked it) and becomes 'done' (or 'skipped').
  A crash between the steps leaves 'pending', which the next run finishes; a finished entry is
  never emitted again.

  Input:
    KEYS[1]  tenant record hash     P:{t}:tenant
    KEYS[2]  cascade keys hash      P:{t}:cascade:keys
    KEYS[3]  outbox stream          P:{t}:outbox
    KEYS[4]  cascade state hash     P:{t}:cascade (correlation id of the close)
    ARGV[1]  'claim' | 'finish'     ARGV[2] key id
    ARGV[3]  claim: the key's status as read; finish: '1' to emit the event, '0' to settle silently
    ARGV[4]  key name ('' if none)
    ARGV[5]  event id base   ARGV[6] request id   ARGV[7] trace id   ARGV[8] actor JSON
    ARGV[9]  tenant id

  Output: {'NOT_CLOSED'} (claim on a tenant that is not CLOSED) | {'OK', outcome}
          claim outcomes  CLAIMED | PENDING (an earlier run claimed it) | DONE | SKIP (not ACTIVE)
          finish outcomes EMITTED | SETTLED (no event) | NOOP (nothing pending)
]]
--- @include "common"
--- @include "cascade"

local entry = redis.call('HGET', KEYS[2], ARGV[2])

if ARGV[1] == 'claim' then
  if redis.call('HGET', KEYS[1], 'status') ~= 'CLOSED' then return {'NOT_CLOSED'} end
  if entry then
    if string.sub(entry, 1, 8) == 'pending:' then return {'OK', 'PENDING'} end
    return {'OK', 'DONE'}
  end
  if ARGV[3] ~= 'ACTIVE' then return {'OK', 'SKIP'} end
  redis.call('HSET', KEYS[2], ARGV[2], 'pending:' .. ARGV[3])
  return {'OK', 'CLAIMED'}
end

if not entry or string.sub(entry, 1, 8) ~= 'pending:' then return {'OK', 'NOOP'} end
if ARGV[3] ~= '1' then
  redis.call('HSET', KEYS[2], ARGV[2], 'skipped')
  return {'OK', 'SETTLED'}
end
local ctx = cascade_ctx(KEYS[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
emit_cascade(KEYS[3], ctx, 'api_key.revoked_via_tenant_cascade', 'api_key', nil, {
  'key_id', js(ARGV[2]), 'name', ARGV[4] ~= '' and js(ARGV[4]) or nil,
  'prior_status', js(string.sub(entry, 9)), 'new_status', js('REVOKED'),
})
redis.call('HSET', KEYS[2], ARGV[2], 'done')
return {'OK', 'EMITTED'}
