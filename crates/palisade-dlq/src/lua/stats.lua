-- stats: the queue's counts, counters and oldest entry, read at one instant.
-- KEYS: all, entries, due, leases, parked, quarantined, kinds, stats, seq.
-- No ARGV.
-- Returns {now, #due (scheduled and leased), #leased, #parked, #quarantined, #all, {kinds},
-- {stats}, seq, {oldest id, its first failure or false}} (the last empty when the queue is).
-- Helpers: now_ms, n2s.
local all, entries, due, leases, parked, quarantined, kinds, stats, seq =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local now = now_ms()
local oldest = {}
local m = redis.call('ZRANGE', all, 0, 0)[1]
if m then
  local e = redis.call('HGET', entries, m) or ''
  oldest = {m, string.match(e, '^{"kind":"[%w_]*","state":"%a*","att":[^,]*,"first":(%d+),')
    or false}
end
return {n2s(now), redis.call('ZCARD', due), redis.call('HLEN', leases),
  redis.call('ZCARD', parked), redis.call('ZCARD', quarantined),
  redis.call('ZCARD', all), redis.call('HGETALL', kinds),
  redis.call('HGETALL', stats), redis.call('GET', seq) or '0', oldest}
