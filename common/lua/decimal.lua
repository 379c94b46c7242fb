-- Prepended to the scripts that compare amounts (common::lua::with_decimal).
-- Exact a < b for canonical non-negative decimal strings, at any size: Lua numbers are doubles,
-- which cannot tell 2^53 from 2^53 + 1.
local function less(a, b)
  if #a ~= #b then
    return #a < #b
  end
  return a < b
end
