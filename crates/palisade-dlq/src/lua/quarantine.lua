-- quarantine: moves an entry to the quarantine (raw bytes kept) with the reason as its error.
-- With a token, only while that lease is current; without one, in any state. An entry whose
-- status line does not decode is moved unchanged.
-- KEYS: entries, leases, dlv, due, parked, quarantined, stats.
-- ARGV[1] id; ARGV[2] token (empty: any state); ARGV[3] reason (JSON string).
-- Returns 1, or 0 (unknown id, stale token).
-- Helpers: enc, status.
local entries, leases, dlv, due, parked, quarantined, stats =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local m = ARGV[1]
local e = redis.call('HGET', entries, m)
if not e then return 0 end
local lease = redis.call('HGET', leases, m)
local tok = nil
if lease then tok = string.match(lease, '^[^ ]*') end
if ARGV[2] ~= '' and tok ~= ARGV[2] then return 0 end
local updated = e
local p = string.find(e, '\n', 1, true)
if p then
  local ok, s = pcall(cjson.decode, string.sub(e, 1, p - 1))
  if ok and type(s) == 'table' then
    local built, line = pcall(status, s, 'quarantined', enc(s.att), 'null', ARGV[3])
    if built then updated = line .. string.sub(e, p) end
  end
end
redis.call('HDEL', dlv, m)
if tok then
  redis.call('HDEL', leases, m)
  redis.call('ZREM', due, m)
else
  -- Out of its state's index; out of all of them when the status line does not say.
  local st = string.match(e, '^{"kind":"[%w_]*","state":"(%a*)"')
  if st == 'scheduled' then redis.call('ZREM', due, m)
  elseif st == 'parked' then redis.call('ZREM', parked, m)
  elseif st ~= 'quarantined' then
    redis.call('ZREM', due, m)
    redis.call('ZREM', parked, m)
  end
end
redis.call('ZADD', quarantined, m, m)
if updated ~= e then redis.call('HSET', entries, m, updated) end
redis.call('HINCRBY', stats, 'quarantined', 1)
return 1
