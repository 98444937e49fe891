-- clear: removes the overrides whose field starts with a prefix (`<kind>/<name>/`), or all.
-- KEYS: overrides.
-- ARGV[1] the prefix; '' removes every override.
-- Returns how many were removed.
local overrides = KEYS[1]
local prefix = ARGV[1]
local removed = 0
for _, field in ipairs(redis.call('HKEYS', overrides)) do
  if string.sub(field, 1, #prefix) == prefix then
    redis.call('HDEL', overrides, field)
    removed = removed + 1
  end
end
return removed
