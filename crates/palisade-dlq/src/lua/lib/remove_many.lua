-- remove_many(K, ms): removes the entries `ms` (zero-padded ids) in any state; an id without an
-- entry only leaves the indexes. `K` holds the caller's declared keys: K.entries, K.due,
-- K.parked, K.quarantined, K.all, K.leases, K.dlv, K.kinds. Reads every entry (for its kind)
-- before the first write, then one command per key for the whole batch. Returns how many
-- entries existed. Needs kind_add.
local function remove_many(K, ms)
  if #ms == 0 then return 0 end
  local counts, found = {}, 0
  for _, m in ipairs(ms) do
    local e = redis.call('HGET', K.entries, m)
    if e then
      found = found + 1
      local kind = string.match(e, '^{"kind":"([%w_]*)"')
      if kind then counts[kind] = (counts[kind] or 0) + 1 end
    end
  end
  redis.call('HDEL', K.entries, unpack(ms))
  redis.call('ZREM', K.due, unpack(ms))
  redis.call('ZREM', K.parked, unpack(ms))
  redis.call('ZREM', K.quarantined, unpack(ms))
  redis.call('ZREM', K.all, unpack(ms))
  redis.call('HDEL', K.leases, unpack(ms))
  redis.call('HDEL', K.dlv, unpack(ms))
  for k, c in pairs(counts) do kind_add(K.kinds, k, -c) end
  return found
end
