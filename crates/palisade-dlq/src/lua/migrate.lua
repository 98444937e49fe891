-- migrate: moves old-layout entries (one string key per entry) into the `entries` hash,
-- unchanged. The old keys are declared one by one (they share the queue's hash tag, hence its
-- Cluster slot). An entry that already has its field is left alone, old key included.
-- KEYS: entries, then the old keys `palisade:dlq:{q}:e:<id>` of the batch.
-- ARGV: the ids (zero-padded, the fields) of KEYS[2], KEYS[3]... in that order.
-- Returns how many entries moved.
local entries = KEYS[1]
local moved = 0
for i = 2, #KEYS do
  local old = KEYS[i]
  local m = ARGV[i - 1]
  if redis.call('HEXISTS', entries, m) == 0 then
    -- A key of another type under that name is no entry: left alone (pcall, no abort).
    local e = redis.pcall('GET', old)
    if type(e) == 'string' then
      redis.call('HSET', entries, m, e)
      redis.call('DEL', old)
      moved = moved + 1
    end
  end
end
return moved
