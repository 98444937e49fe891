-- kind_add(kinds, k, d): adds `d` to the count of entries of failure kind `k` in the `kinds`
-- hash (the key is the caller's declared KEYS entry); drops the field at zero.
local function kind_add(kinds, k, d)
  if k and k ~= '' and d ~= 0 then
    if redis.call('HINCRBY', kinds, k, d) <= 0 then redis.call('HDEL', kinds, k) end
  end
end
