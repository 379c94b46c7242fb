-- Creates (or overwrites) orders "0" .. "n-1", open and unpaid, each with two items of quantity 1,
-- and logs one entry holding the seed that chose their users and items.
-- KEYS[1]  log:order
-- ARGV[1]  log_id   ARGV[2] n   ARGV[3] n_items   ARGV[4] n_users   ARGV[5] item price
-- ARGV[6]  seed     ARGV[7] total cost of each order (2 * price)   ARGV[8] the orders' key prefix
-- ARGV[9..] user, item, item for order 0, then for order 1, ... (from common::batch::batch_orders)
local n = tonumber(ARGV[2])
for i = 0, n - 1 do
  local base = 9 + 3 * i
  local items = '[["' .. ARGV[base + 1] .. '",1],["' .. ARGV[base + 2] .. '",1]]'
  redis.call('HSET', ARGV[8] .. i, 'user_id', ARGV[base], 'total_cost', ARGV[7], 'items', items,
    'status', 'OPEN', 'saga', '')
end
redis.call('XADD', KEYS[1], '*', 'log_id', ARGV[1], 'type', 'OrderBatchInit', 'n', ARGV[2],
  'n_items', ARGV[3], 'n_users', ARGV[4], 'price', ARGV[5], 'seed', ARGV[6])
return {'OK'}
