-- purge: removes up to ARGV[1] entries, oldest first; once the queue is empty, also deletes
-- its (then empty) indexes. Counters and sequences stay.
-- KEYS: entries, due, parked, quarantined, all, leases, dlv, kinds, stats.
-- ARGV[1] budget.
-- Returns {removed, done (1: the queue is empty)}.
-- Helpers: kind_add, remove_many.
local entries, due, parked, quarantined, all, leases, dlv, kinds, stats =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local K = {entries = entries, due = due, parked = parked, quarantined = quarantined, all = all,
  leases = leases, dlv = dlv, kinds = kinds}
local n = remove_many(K, redis.call('ZRANGE', all, 0, tonumber(ARGV[1]) - 1))
if n > 0 then redis.call('HINCRBY', stats, 'purged', n) end
if redis.call('ZCARD', all) == 0 then
  redis.call('DEL', entries, due, parked, quarantined, leases, kinds, dlv)
  return {n, 1}
end
return {n, 0}
