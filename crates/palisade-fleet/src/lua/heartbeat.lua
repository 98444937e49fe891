-- heartbeat: registers (or refreshes) one instance until Redis TIME + ttl, keeps its cursor,
-- and drops up to 100 instances whose registration has expired.
-- KEYS: instances, info, cursor, snapshots.
-- ARGV[1] instance id; ARGV[2] its details (JSON); ARGV[3] ttl ms; ARGV[4] cursor retention ms;
-- ARGV[5] its components' snapshots (JSON; empty: unchanged).
-- Returns Redis TIME in ms.
local instances, info, cursor, snapshots = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function n2s(n) return string.format('%.0f', n) end
redis.call('ZADD', instances, n2s(now + tonumber(ARGV[3])), ARGV[1])
redis.call('HSET', info, ARGV[1], ARGV[2])
redis.call('PEXPIRE', cursor, ARGV[4])
if ARGV[5] ~= '' then
  redis.call('HSET', snapshots, ARGV[1], ARGV[5])
end
local expired = redis.call('ZRANGEBYSCORE', instances, '-inf', '(' .. n2s(now), 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  redis.call('ZREM', instances, id)
  redis.call('HDEL', info, id)
  redis.call('HDEL', snapshots, id)
end
return now
