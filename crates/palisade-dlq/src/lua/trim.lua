-- trim: walks `all` from the id after the cursor, removing entries first failed before the
-- cutoff, until the first younger one (entries whose first failure is unreadable are passed
-- over; index members without an entry are dropped uncounted); then removes the oldest entries
-- over the maximum size. Scans and removes at most the budget in all.
-- KEYS: entries, due, parked, quarantined, all, leases, dlv, kinds, stats.
-- ARGV[1] ttl ms; ARGV[2] max entries; ARGV[3] budget; ARGV[4] cutoff (empty on the first
-- call: now - ttl); ARGV[5] cursor (`0` on the first call).
-- Returns {expired, evicted, done, cutoff, cursor}: the cursor is where the walk stopped,
-- `end` once it is over; pass cutoff and cursor back until done is 1.
-- Helpers: now_ms, n2s, kind_add, remove_many.
local entries, due, parked, quarantined, all, leases, dlv, kinds, stats =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local K = {entries = entries, due = due, parked = parked, quarantined = quarantined, all = all,
  leases = leases, dlv = dlv, kinds = kinds}
local cutoff = tonumber(ARGV[4])
if not cutoff then
  cutoff = now_ms() - tonumber(ARGV[1])
  if cutoff < 0 then cutoff = 0 end
end
local maxn = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local cursor = ARGV[5]
local scanned = 0
local old = {}
while cursor ~= 'end' and scanned < budget do
  local ms = redis.call('ZRANGEBYSCORE', all, '(' .. cursor, '+inf', 'LIMIT', 0,
    math.min(64, budget - scanned))
  if #ms == 0 then
    cursor = 'end'
    break
  end
  for _, m in ipairs(ms) do
    local e = redis.call('HGET', entries, m)
    scanned = scanned + 1
    if not e then
      -- A stray member: dropped from the indexes (not counted).
      old[#old + 1] = m
    else
      local first = tonumber(string.match(e,
        '^{"kind":"[%w_]*","state":"%a*","att":[^,]*,"first":(%d+),'))
      if first then
        if first >= cutoff then
          cursor = 'end'
          break
        end
        old[#old + 1] = m
      end
    end
    cursor = m
  end
end
local expired = remove_many(K, old)
local evicted = 0
local done = 1
if cursor ~= 'end' then
  done = 0
else
  local len = redis.call('ZCARD', all)
  if len > maxn then
    local over = len - maxn
    local k = math.min(over, budget - scanned)
    if k > 0 then
      evicted = remove_many(K, redis.call('ZRANGE', all, 0, k - 1))
    end
    if over > k then done = 0 end
  end
end
if expired > 0 then redis.call('HINCRBY', stats, 'expired', expired) end
if evicted > 0 then redis.call('HINCRBY', stats, 'evicted', evicted) end
return {expired, evicted, done, n2s(cutoff), cursor}
