-- ack: removes each leased entry whose lease is current (an id listed twice is removed once).
-- KEYS: leases, entries, due, all, dlv, stats, kinds.
-- ARGV: id, token, id, token, ... (ids zero-padded).
-- Returns one 1 (acknowledged) or 0 (stale token, unknown id) per pair.
local leases, entries, due, all, dlv, stats, kinds =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local n = #ARGV / 2
if n < 1 then return {} end
local ms = {}
for i = 1, n do ms[i] = ARGV[2 * i - 1] end
local held = redis.call('HMGET', leases, unpack(ms))
local out, done, counts = {}, {}, {}
-- Lease values (`<token> <kind>`) repeat within a batch: each is split once.
local toks, kindof = {}, {}
local k = 0
for i = 1, n do
  out[i] = 0
  local v, m = held[i], ms[i]
  if v and not done[m] then
    local t = toks[v]
    if not t then
      local sp = string.find(v, ' ', 1, true) or (#v + 1)
      t = string.sub(v, 1, sp - 1)
      toks[v] = t
      kindof[v] = string.sub(v, sp + 1)
    end
    if t == ARGV[2 * i] then
      done[m] = true
      out[i] = 1
      k = k + 1
      ms[k] = m
      local kind = kindof[v]
      if kind ~= '' then counts[kind] = (counts[kind] or 0) + 1 end
    end
  end
end
if k > 0 then
  for i = n, k + 1, -1 do ms[i] = nil end
  redis.call('HDEL', entries, unpack(ms))
  redis.call('ZREM', due, unpack(ms))
  redis.call('ZREM', all, unpack(ms))
  redis.call('HDEL', leases, unpack(ms))
  redis.call('HDEL', dlv, unpack(ms))
  redis.call('HINCRBY', stats, 'acked', k)
  for kind, c in pairs(counts) do
    if redis.call('HINCRBY', kinds, kind, -c) <= 0 then redis.call('HDEL', kinds, kind) end
  end
end
return out
