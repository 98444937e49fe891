-- breakers: one exchange of an instance's shared breakers with its fleet, all breakers in one
-- call. Each breaker's key is a hash:
--   c:<second>, f:<second>  calls and failures the instances reported in that second (Redis time)
--   m:<instance>            until when (ms) the instance counts as sharing the breaker
--   o:<instance>            until when (ms) its report "open on its own" holds
--   s:<instance>            when (ms) its breaker last closed: its view of the window starts there
-- KEYS: one key per shared breaker (this script takes any number; each is used as `key`).
-- ARGV[1] instance id; ARGV[2] how long a report holds (ms); then 5 per key, in KEYS order:
-- window ms, calls, failures, open on its own (1/0), closed since the last exchange (1/0).
-- Returns {now ms, {calls, failures, instances, open} per key}: the window's sums from this
-- instance's view, the instances sharing the breaker, and those open on their own.
local me, hold = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function n2s(n) return string.format('%.0f', n) end
local second = math.floor(now / 1000)
local out = {now}
for i, key in ipairs(KEYS) do
  local a = 2 + (i - 1) * 5
  local window, calls, failures = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  if calls > 0 then redis.call('HINCRBY', key, 'c:' .. second, n2s(calls)) end
  if failures > 0 then redis.call('HINCRBY', key, 'f:' .. second, n2s(failures)) end
  redis.call('HSET', key, 'm:' .. me, n2s(now + hold))
  if ARGV[a + 4] == '1' then
    redis.call('HSET', key, 'o:' .. me, n2s(now + hold))
  else
    redis.call('HDEL', key, 'o:' .. me)
  end
  if ARGV[a + 5] == '1' then redis.call('HSET', key, 's:' .. me, n2s(now)) end
  local since = tonumber(redis.call('HGET', key, 's:' .. me)) or 0
  local oldest = now - window
  local sums = {c = 0, f = 0}
  local members, open = 0, 0
  local gone = {}
  local fields = redis.call('HGETALL', key)
  for j = 1, #fields, 2 do
    local field, value = fields[j], tonumber(fields[j + 1]) or 0
    local kind, rest = string.sub(field, 1, 1), string.sub(field, 3)
    if kind == 'c' or kind == 'f' then
      local start = (tonumber(rest) or 0) * 1000
      if start + 1000 <= oldest then
        redis.call('HDEL', key, field)
      elseif start >= since then
        sums[kind] = sums[kind] + value
      end
    elseif kind == 'm' then
      if value < now then gone[#gone + 1] = rest else members = members + 1 end
    elseif kind == 'o' then
      if value < now then redis.call('HDEL', key, field) else open = open + 1 end
    end
  end
  for _, id in ipairs(gone) do
    redis.call('HDEL', key, 'm:' .. id, 'o:' .. id, 's:' .. id)
  end
  redis.call('PEXPIRE', key, n2s(2 * math.max(window, hold)))
  out[#out + 1] = {sums.c, sums.f, members, open}
end
return out
