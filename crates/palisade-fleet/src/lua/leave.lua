-- leave: removes one instance from the fleet at once (its cursor stays, so that it catches up
-- when it joins again under the same id).
-- KEYS: instances, info, snapshots.
-- ARGV[1] instance id.
-- Returns 1 if it was registered, else 0.
local instances, info, snapshots = KEYS[1], KEYS[2], KEYS[3]
local removed = redis.call('ZREM', instances, ARGV[1])
redis.call('HDEL', info, ARGV[1])
redis.call('HDEL', snapshots, ARGV[1])
return removed
