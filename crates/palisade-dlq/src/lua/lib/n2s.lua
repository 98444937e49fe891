-- n2s(n): an integral number as a decimal string (never `1e+15`).
local function n2s(n) return string.format('%.0f', n) end
