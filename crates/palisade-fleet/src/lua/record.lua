-- record: one instance's outcome of one command, and the instance's cursor moved past it.
-- KEYS: results, cursor.
-- ARGV[1] instance id; ARGV[2] outcome (JSON), or '' for a command skipped without outcome;
-- ARGV[3] results retention ms; ARGV[4] the command's stream id; ARGV[5] cursor retention ms.
-- Returns 1.
local results, cursor = KEYS[1], KEYS[2]
if ARGV[2] ~= '' then
  redis.call('HSET', results, ARGV[1], ARGV[2])
  redis.call('PEXPIRE', results, ARGV[3])
end
redis.call('SET', cursor, ARGV[4], 'PX', ARGV[5])
return 1
