-- get: one entry and, when it is leased, its lease deadline.
-- KEYS: entries, leases, due.
-- ARGV[1] id.
-- Returns {} when unknown, else {entry, lease deadline or false}.
-- Helpers: n2s.
local entries, leases, due = KEYS[1], KEYS[2], KEYS[3]
local m = ARGV[1]
local e = redis.call('HGET', entries, m)
if not e then return {} end
local dl = false
if redis.call('HEXISTS', leases, m) == 1 then
  local s = redis.call('ZSCORE', due, m)
  if s then dl = n2s(tonumber(s)) end
end
return {e, dl}
