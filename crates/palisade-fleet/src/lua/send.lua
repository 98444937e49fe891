-- send: appends a command to the fleet's stream (capped, approximately), stores or removes its
-- override when persisted, and lists the instances live at that moment.
-- KEYS: stream, overrides, instances.
-- ARGV[1] the command (JSON); ARGV[2] stream cap (MAXLEN ~); ARGV[3] override field, or '' when
-- not persisted; ARGV[4] override (JSON); ARGV[5] `1` to remove the field instead of setting it.
-- Returns {stream id, live instance ids}.
local stream, overrides, instances = KEYS[1], KEYS[2], KEYS[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], '*', 'cmd', ARGV[1])
if ARGV[3] ~= '' then
  if ARGV[5] == '1' then
    redis.call('HDEL', overrides, ARGV[3])
  else
    redis.call('HSET', overrides, ARGV[3], id .. ' ' .. ARGV[4])
  end
end
local live = redis.call('ZRANGEBYSCORE', instances, string.format('%.0f', now), '+inf')
return {id, live}
