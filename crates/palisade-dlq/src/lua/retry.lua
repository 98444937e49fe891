-- retry: makes a scheduled (not leased) or parked entry due now with attempts 0.
-- KEYS: entries, leases, due, parked, dlv, stats.
-- ARGV[1] id.
-- Returns 1, or 0 (unknown id, leased, quarantined or unreadable entry).
-- Helpers: now_ms, n2s, enc, status.
local entries, leases, due, parked, dlv, stats =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local m = ARGV[1]
local e = redis.call('HGET', entries, m)
if not e then return 0 end
local st = string.match(e, '^{"kind":"[%w_]*","state":"(%a*)"')
if st ~= 'scheduled' and st ~= 'parked' then return 0 end
if redis.call('HEXISTS', leases, m) == 1 then return 0 end
local p = string.find(e, '\n', 1, true)
if not p then return 0 end
local ok, s = pcall(cjson.decode, string.sub(e, 1, p - 1))
if not ok or type(s) ~= 'table' then return 0 end
local nows = n2s(now_ms())
local built, line = pcall(status, s, 'scheduled', '0', nows, enc(s.err))
if not built then return 0 end
if st == 'parked' then redis.call('ZREM', parked, m) end
redis.call('ZADD', due, nows, m)
redis.call('HDEL', dlv, m)
redis.call('HSET', entries, m, line .. string.sub(e, p))
redis.call('HINCRBY', stats, 'retried', 1)
return 1
