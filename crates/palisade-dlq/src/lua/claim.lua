-- claim: leases up to ARGV[1] due entries (scheduled ones due now and expired leases), in due
-- order, all under one fresh fencing token. Writes no entry: a lease is the entry's `due` member
-- rescored to the deadline plus its `leases` field (`<token> <kind>`); `dlv` counts deliveries.
-- Index members without an entry (deleted by hand) are dropped.
-- KEYS: due, entries, leases, dlv, all, tok.
-- ARGV[1] max entries; ARGV[2] lease ms.
-- Returns {due ids examined} when none was claimed, else
-- {examined, token, deadline, id, entry, deliveries, id, entry, deliveries...}.
-- Helpers: now_ms, n2s.
local due, entries, leases, dlv, all, tok = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now = now_ms()
local ms = redis.call('ZRANGEBYSCORE', due, '-inf', n2s(now), 'LIMIT', 0, tonumber(ARGV[1]))
local n = #ms
if n == 0 then return {0} end
local es = redis.call('HMGET', entries, unpack(ms))
-- The token is taken before the loop (HMGET cannot fail): one pass builds everything.
local token = n2s(redis.call('INCR', tok))
local deadline = n2s(now + tonumber(ARGV[2]))
local out = {n, token, deadline}
local scores, holders, gone, held = {}, {}, {}, {}
local k = 0
for i, m in ipairs(ms) do
  local e = es[i]
  if e then
    k = k + 1
    scores[2 * k - 1] = deadline
    scores[2 * k] = m
    local kind = string.match(e, '^{"kind":"([%w_]*)"') or ''
    local h = held[kind]
    if not h then
      h = token .. ' ' .. kind
      held[kind] = h
    end
    holders[2 * k - 1] = m
    holders[2 * k] = h
    out[3 * k + 1] = m
    out[3 * k + 2] = e
    out[3 * k + 3] = redis.call('HINCRBY', dlv, m, 1)
  else
    gone[#gone + 1] = m
  end
end
if #gone > 0 then
  redis.call('ZREM', due, unpack(gone))
  redis.call('ZREM', all, unpack(gone))
  redis.call('HDEL', leases, unpack(gone))
  redis.call('HDEL', dlv, unpack(gone))
  if k == 0 then return {n} end
end
redis.call('ZADD', due, unpack(scores))
redis.call('HSET', leases, unpack(holders))
return out
