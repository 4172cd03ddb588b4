--[[
  Updates the mutable fields of an API key (name, description, permissions, scope_filter,
  metadata), only while the key is ACTIVE, so an update racing a revocation can never write to
  a key that is already REVOKED.

  Input:
    KEYS[1]  API key record hash   P:key:<key_id>
    ARGV[1..] field, value pairs to set (at least one pair)

  Output: {'OK'} | {'NOT_FOUND'} | {'NOT_ACTIVE', <stored status>}

  Side effects: HSET of the given fields. The caller publishes the key id on the auth
  invalidation channel afterwards (pub/sub is not part of the atomic step).
]]

local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'NOT_FOUND'} end
if status ~= 'ACTIVE' then return {'NOT_ACTIVE', status} end
if #ARGV >= 2 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return {'OK'}
