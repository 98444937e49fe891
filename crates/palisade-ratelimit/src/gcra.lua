-- GCRA on Redis: one bucket, one decision.
--
-- KEYS[1]: the bucket. ARGV: emission interval (µs), tolerance (µs), cells.
-- Returns {allowed, remaining, retry_after_us, reset_after_us}, as redis-cell's CL.THROTTLE.
--
-- Time comes from Redis TIME, so instances' clocks do not matter. The bucket's value is
-- "<tat>.<tolerance>": the theoretical arrival time (µs) and the tolerance it was written under.
-- Older versions stored the bare TAT; such a value is read as written under the current
-- tolerance. (An older version reads "<tat>.<tolerance>" as a number: the TAT, give or take a
-- microsecond, so instances of both versions can share buckets during a rolling upgrade.)
--
-- When the stored tolerance differs from ARGV's (the quota changed), the bucket keeps the
-- fraction of its burst it had used: TAT = now + clamp((TAT - now) / old, 0, 1) * tolerance,
-- rounded up, and that rescaled state is stored whatever the verdict.
-- An admission stores the new TAT with an expiry at which the bucket is full again (idle
-- buckets vanish); a denial writes nothing, unless it rescaled the bucket.
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local tat = now
local written = nil
local raw = redis.call('GET', KEYS[1])
if raw then
  local a, b = string.match(raw, '^(%d+)%.(%d+)$')
  if a then
    tat, written = tonumber(a), tonumber(b)
  else
    tat = tonumber(raw) or now
  end
end

local rescaled = false
if tat < now then
  tat = now
elseif written and written > 0 and written ~= tolerance then
  local used = tat - now
  local carried = tolerance
  if used < written then
    carried = math.ceil(used * tolerance / written)
    if carried > tolerance then carried = tolerance end
  end
  tat = now + carried
  rescaled = true
end

local function store(at)
  redis.call('SET', KEYS[1], string.format('%.0f.%.0f', at, tolerance),
    'PX', math.ceil((at - now) / 1000))
end

local new_tat = tat + n * interval
local diff = new_tat - now
if diff > tolerance then
  if rescaled and tat > now then store(tat) end
  local remaining = math.floor((tolerance - (tat - now)) / interval)
  if remaining < 0 then remaining = 0 end
  return {0, remaining, diff - tolerance, tat - now}
end
if n > 0 then
  store(new_tat)
elseif rescaled and tat > now then
  store(tat)
end
return {1, math.floor((tolerance - diff) / interval), 0, diff}
