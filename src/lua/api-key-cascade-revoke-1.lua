--[[
  Revokes one API key for its tenant's close cascade (ADR 0015): ACTIVE -> REVOKED, only if the
  key still belongs to that tenant. The key's global hash is in its own slot, so this is the one
  cascade step outside the tenant slot; the tenant slot records progress around it
  (tenant-cascade-key-4).

  Input:
    KEYS[1]  API key record hash   P:key:<key_id>
    ARGV[1]  tenant id             ARGV[2] revoked_at, ISO-8601   ARGV[3] revoked_reason

  Output: {'OK'} (revoked now) | {'ALREADY', status, revoked_reason or ''} | {'NOT_FOUND'}
          | {'NOT_OWNED'}

  Side effects: status, revoked_at, revoked_reason. The caller publishes the key id on the auth
  invalidation channel afterwards.
]]

local v = redis.call('HMGET', KEYS[1], 'status', 'tenant_id', 'revoked_reason')
if not v[1] then return {'NOT_FOUND'} end
if v[2] ~= ARGV[1] then return {'NOT_OWNED'} end
if v[1] ~= 'ACTIVE' then return {'ALREADY', v[1], v[3] or ''} end
redis.call('HSET', KEYS[1], 'status', 'REVOKED', 'revoked_at', ARGV[2], 'revoked_reason', ARGV[3])
return {'OK'}
