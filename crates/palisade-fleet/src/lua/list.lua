-- list: drops up to 100 expired instances, then lists the live ones.
-- KEYS: instances, info.
-- ARGV: none.
-- Returns {now ms, id, expiry ms, details JSON (or ''), id, expiry ms, details, ...}.
local instances, info = KEYS[1], KEYS[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function n2s(n) return string.format('%.0f', n) end
local expired = redis.call('ZRANGEBYSCORE', instances, '-inf', '(' .. n2s(now), 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  redis.call('ZREM', instances, id)
  redis.call('HDEL', info, id)
end
local live = redis.call('ZRANGEBYSCORE', instances, n2s(now), '+inf', 'WITHSCORES')
local out = {n2s(now)}
for i = 1, #live, 2 do
  out[#out + 1] = live[i]
  out[#out + 1] = live[i + 1]
  out[#out + 1] = redis.call('HGET', info, live[i]) or ''
end
return out
