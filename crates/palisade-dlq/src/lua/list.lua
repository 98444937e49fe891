-- list: scans one index in id order from a cursor and returns the entries matching a filter.
-- Parked and quarantined entries have their own indexes (scored by id): a filter on those
-- states scans only that one.
-- KEYS: all, parked, quarantined, entries, leases, due.
-- ARGV[1] index to scan (`all`, `parked`, `quarantined`); ARGV[2] after this id (empty: from
-- the start); ARGV[3] scan budget; ARGV[4] matches wanted; ARGV[5] kind (empty for any, else
-- `=` and the kind); ARGV[6] origin prefix (empty for any, else `{"op":<op as JSON>,`);
-- ARGV[7] state (like the kind).
-- Returns {last scanned id or '', done (1: the index is exhausted),
-- {{id, entry, lease deadline or false}...}}.
-- Helpers: n2s.
local all, parked, quarantined, entries, leases, due =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local src = all
if ARGV[1] == 'parked' then src = parked
elseif ARGV[1] == 'quarantined' then src = quarantined end
local min = '-inf'
if ARGV[2] ~= '' then min = '(' .. ARGV[2] end
local budget = tonumber(ARGV[3])
local need = tonumber(ARGV[4])
local kf, of, sf = ARGV[5], ARGV[6], ARGV[7]
local ms = redis.call('ZRANGEBYSCORE', src, min, '+inf', 'LIMIT', 0, budget)
local out = {}
local last = ''
local stopped = false
local leased = {}
if #ms > 0 and src == all then leased = redis.call('HMGET', leases, unpack(ms)) end
for i, m in ipairs(ms) do
  last = m
  local e = redis.call('HGET', entries, m)
  if e then
    local kind, st = string.match(e, '^{"kind":"([%w_]*)","state":"(%a*)"')
    if leased[i] then st = 'leased' end
    local ok = (kf == '' or kf == '=' .. (kind or '')) and (sf == '' or sf == '=' .. (st or ''))
    if ok and of ~= '' then
      local p = string.find(e, '\n', 1, true)
      ok = p ~= nil and string.sub(e, p + 1, p + #of) == of
    end
    if ok then
      local dl = false
      if leased[i] then
        local s = redis.call('ZSCORE', due, m)
        if s then dl = n2s(tonumber(s)) end
      end
      out[#out + 1] = {m, e, dl}
      if #out >= need then
        stopped = true
        break
      end
    end
  end
end
local done = 0
if not stopped and #ms < budget then done = 1 end
return {last, done, out}
