-- Extends a lease: the entry ARGV[1] (its zero-padded id), held under the token ARGV[2], is
-- leased for ARGV[3] more milliseconds from now.
-- KEYS[1]: the queue's `due` index (a leased entry's score is its lease deadline).
-- KEYS[2]: the queue's `leases` hash (`<token> <kind>` per leased entry).
-- Returns 1, or 0 when the token is no longer the entry's: another worker claimed it after the
-- lease expired, or it was acknowledged, failed, discarded or retried meanwhile.
local v = redis.call('HGET', KEYS[2], ARGV[1])
if not v or string.match(v, '^[^ ]*') ~= ARGV[2] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
return 1
