-- Creates (or overwrites) the orders of one partition among "0" .. "n-1", open and unpaid, each
-- with two items of quantity 1, and logs one entry in that partition's log holding the seed that
-- chose their users and items (replay regenerates the partition's orders from it).
-- KEYS[1]  the partition's log   KEYS[2..] the hashes of the partition's orders
-- ARGV[1]  log_id   ARGV[2] n (of the whole batch)   ARGV[3] n_items   ARGV[4] n_users
-- ARGV[5]  item price   ARGV[6] seed   ARGV[7] total cost of each order (2 * price)
-- ARGV[8..] user, item, item of each order, in KEYS order (from common::batch::batch_orders)
for i = 2, #KEYS do
  local base = 8 + 3 * (i - 2)
  local items = '[["' .. ARGV[base + 1] .. '",1],["' .. ARGV[base + 2] .. '",1]]'
  redis.call('HSET', KEYS[i], 'user_id', ARGV[base], 'total_cost', ARGV[7], 'items', items,
    'status', 'OPEN', 'saga', '')
end
redis.call('XADD', KEYS[1], '*', 'log_id', ARGV[1], 'type', 'OrderBatchInit', 'n', ARGV[2],
  'n_items', ARGV[3], 'n_users', ARGV[4], 'price', ARGV[5], 'seed', ARGV[6])
return {'OK'}
