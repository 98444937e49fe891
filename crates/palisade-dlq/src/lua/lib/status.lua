-- status(s, state, att, nxt, err): a status line from a decoded one `s`, with a new state,
-- attempts, next attempt and error (all but `state` already JSON), in the field order of the
-- module documentation. Needs enc.
local function status(s, state, att, nxt, err)
  local h = s.hist
  local hj = '[]'
  if type(h) ~= 'table' or next(h) ~= nil then hj = cjson.encode(h) end
  return '{"kind":' .. enc(s.kind) .. ',"state":"' .. state .. '","att":' .. att ..
    ',"first":' .. enc(s.first) .. ',"last":' .. enc(s.last) .. ',"next":' .. nxt ..
    ',"err":' .. err .. ',"hist":' .. hj .. '}'
end
