-- discard: removes an entry in any state.
-- KEYS: entries, due, parked, quarantined, all, leases, dlv, kinds, stats.
-- ARGV[1] id.
-- Returns 1, or 0 for an unknown id.
-- Helpers: kind_add, remove_many.
local entries, due, parked, quarantined, all, leases, dlv, kinds, stats =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local K = {entries = entries, due = due, parked = parked, quarantined = quarantined, all = all,
  leases = leases, dlv = dlv, kinds = kinds}
if remove_many(K, {ARGV[1]}) == 1 then
  redis.call('HINCRBY', stats, 'discarded', 1)
  return 1
end
return 0
