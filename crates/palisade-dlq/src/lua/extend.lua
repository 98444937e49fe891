-- extend: extends a lease: the entry ARGV[1], held under the token ARGV[2], is leased for
-- ARGV[3] more milliseconds from now.
-- KEYS: due (a leased entry's score is its lease deadline), leases (`<token> <kind>` per
-- leased entry).
-- ARGV[1] id; ARGV[2] token; ARGV[3] lease ms.
-- Returns 1, or 0 when the token is no longer the entry's: another worker claimed it after the
-- lease expired, or it was acknowledged, failed, discarded or retried meanwhile.
-- Helpers: now_ms, n2s.
local due, leases = KEYS[1], KEYS[2]
local v = redis.call('HGET', leases, ARGV[1])
if not v or string.match(v, '^[^ ]*') ~= ARGV[2] then
  return 0
end
redis.call('ZADD', due, 'XX', n2s(now_ms() + tonumber(ARGV[3])), ARGV[1])
return 1
