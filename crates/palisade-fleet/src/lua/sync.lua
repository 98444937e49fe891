-- sync: where an instance starts reading commands, and every override, in one atomic read.
-- The instance's cursor if it has one (it ran before: it catches up from there), else the
-- stream's last id (a new instance applies what is sent from now on); either is stored as the
-- cursor with the retention.
-- KEYS: stream, overrides, cursor.
-- ARGV[1] cursor retention ms.
-- Returns {now ms, start id, `1` if the cursor existed else `0`, field, value, field, value...}.
local stream, overrides, cursor = KEYS[1], KEYS[2], KEYS[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local start = redis.call('GET', cursor)
local existed = '1'
if not start then
  existed = '0'
  start = '0-0'
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #last > 0 then start = last[1][1] end
end
redis.call('SET', cursor, start, 'PX', ARGV[1])
local out = {string.format('%.0f', now), start, existed}
local all = redis.call('HGETALL', overrides)
for i = 1, #all do out[#out + 1] = all[i] end
return out
