-- enqueue: adds an entry, scheduled or parked, stamped with Redis TIME; evicts the oldest
-- entries first while the queue is full.
-- KEYS: entries, due, parked, quarantined, all, leases, dlv, kinds, seq, stats.
-- ARGV[1] max entries; ARGV[2] eviction budget; ARGV[3] kind; ARGV[4] error (JSON string);
-- ARGV[5] origin line; ARGV[6] payload; ARGV[7] park (`1`/`0`); ARGV[8] delay ms.
-- Returns {1, id}, or {0, evicted} when the eviction budget ran out first (call again).
-- Helpers: now_ms, n2s, kind_add, remove_many.
local entries, due, parked, quarantined, all, leases, dlv, kinds, seq, stats =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local now = now_ms()
local len = redis.call('ZCARD', all)
local maxn = math.max(tonumber(ARGV[1]), 1)
if len >= maxn then
  local over = len + 1 - maxn
  local k = math.min(over, tonumber(ARGV[2]))
  local K = {entries = entries, due = due, parked = parked, quarantined = quarantined,
    all = all, leases = leases, dlv = dlv, kinds = kinds}
  local evicted = remove_many(K, redis.call('ZRANGE', all, 0, k - 1))
  if evicted > 0 then redis.call('HINCRBY', stats, 'evicted', evicted) end
  if over > k then return {0, evicted} end
end
local id = redis.call('INCR', seq)
local m = string.format('%020d', id)
local nows = n2s(now)
local park = ARGV[7] == '1'
local st, nxt = 'parked', 'null'
if not park then st, nxt = 'scheduled', n2s(now + tonumber(ARGV[8])) end
redis.call('HSET', entries, m, '{"kind":"' .. ARGV[3] .. '","state":"' .. st ..
  '","att":1,"first":' .. nows .. ',"last":' .. nows .. ',"next":' .. nxt .. ',"err":' ..
  ARGV[4] .. ',"hist":[]}\n' .. ARGV[5] .. '\n' .. ARGV[6])
if park then
  redis.call('ZADD', parked, m, m)
  redis.call('HINCRBY', stats, 'parked', 1)
else
  redis.call('ZADD', due, nxt, m)
end
redis.call('ZADD', all, m, m)
redis.call('HINCRBY', kinds, ARGV[3], 1)
return {1, id}
