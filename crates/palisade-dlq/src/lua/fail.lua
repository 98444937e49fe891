-- fail: records another failure of a leased entry: attempts + 1, the previous failure moves to
-- the history (at most ARGV[7] records), and the entry is rescheduled or parked; its lease and
-- delivery count end. Reads and checks everything before the first write.
-- KEYS: leases, entries, dlv, due, parked, stats, kinds.
-- ARGV[1] id; ARGV[2] token; ARGV[3] kind; ARGV[4] error (JSON string); ARGV[5] park (`1`/`0`);
-- ARGV[6] delay ms; ARGV[7] history length.
-- Returns 1, 0 (stale token) or {'corrupt', field} (nothing changed).
-- Helpers: now_ms, n2s, kind_add, enc.
local leases, entries, dlv, due, parked, stats, kinds =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local m = ARGV[1]
local lease = redis.call('HGET', leases, m)
if not lease or string.match(lease, '^[^ ]*') ~= ARGV[2] then return 0 end
local e = redis.call('HGET', entries, m)
if not e then return {'corrupt', 'status'} end
local p = string.find(e, '\n', 1, true)
local ok, s = false, nil
if p then ok, s = pcall(cjson.decode, string.sub(e, 1, p - 1)) end
if not ok or type(s) ~= 'table' then return {'corrupt', 'status'} end
if type(s.kind) ~= 'string' then return {'corrupt', 'kind'} end
if type(s.err) ~= 'string' then return {'corrupt', 'err'} end
local last = s.last
if type(last) ~= 'number' or last < 0 or last ~= math.floor(last) then
  return {'corrupt', 'last'}
end
local att = s.att
if type(att) ~= 'number' or att < 0 or att ~= math.floor(att) then return {'corrupt', 'att'} end
local hist = s.hist
if type(hist) ~= 'table' then return {'corrupt', 'hist'} end
hist[#hist + 1] = {at_ms = last, kind = s.kind, error = s.err}
while #hist > tonumber(ARGV[7]) do table.remove(hist, 1) end
local now = now_ms()
local park = ARGV[5] == '1'
local st, nxt = 'parked', 'null'
if not park then st, nxt = 'scheduled', n2s(now + tonumber(ARGV[6])) end
redis.call('HDEL', leases, m)
redis.call('HDEL', dlv, m)
redis.call('HSET', entries, m, '{"kind":"' .. ARGV[3] .. '","state":"' .. st .. '","att":' ..
  n2s(math.min(att + 1, 4294967295)) .. ',"first":' .. enc(s.first) .. ',"last":' .. n2s(now) ..
  ',"next":' .. nxt .. ',"err":' .. ARGV[4] .. ',"hist":' .. cjson.encode(hist) .. '}' ..
  string.sub(e, p))
if park then
  redis.call('ZREM', due, m)
  redis.call('ZADD', parked, m, m)
  redis.call('HINCRBY', stats, 'parked', 1)
else
  redis.call('ZADD', due, nxt, m)
end
if s.kind ~= ARGV[3] then
  kind_add(kinds, s.kind, -1)
  kind_add(kinds, ARGV[3], 1)
end
return 1
