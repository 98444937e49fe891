-- enc(v): a decoded status value as JSON again (integers in full, never `1e+15`).
local function enc(v)
  if type(v) == 'number' and v >= 0 and v == math.floor(v) then
    return string.format('%.0f', v)
  end
  return cjson.encode(v)
end
