-- pending (migration): finds entries still in the old layout, where each entry was a string
-- key `palisade:dlq:{q}:e:<id>`: the ids in `all` without a field in `entries`. Scans `all` in
-- id order from a cursor. A first call (empty cursor) answers at once when `all` and
-- `entries` have as many members, as they always have once every entry is migrated.
-- KEYS: all, entries.
-- ARGV[1] after this id (empty: from the start); ARGV[2] scan budget.
-- Returns {next cursor, or '' when the scan is over, {ids without a field}}.
local all, entries = KEYS[1], KEYS[2]
local min = '-inf'
if ARGV[1] == '' then
  if redis.call('ZCARD', all) == redis.call('HLEN', entries) then return {'', {}} end
else
  min = '(' .. ARGV[1]
end
local budget = tonumber(ARGV[2])
local ms = redis.call('ZRANGEBYSCORE', all, min, '+inf', 'LIMIT', 0, budget)
local missing = {}
for _, m in ipairs(ms) do
  if redis.call('HEXISTS', entries, m) == 0 then missing[#missing + 1] = m end
end
local cursor = ''
if #ms == budget then cursor = ms[#ms] end
return {cursor, missing}
