-- Adds an item line to an open order and its cost to the order's total, and logs it, atomically.
-- KEYS[1]  order:<id>   KEYS[2] log:order
-- ARGV[1]  log_id   ARGV[2] order id   ARGV[3] item id   ARGV[4] quantity   ARGV[5] unit price
-- ARGV[6]  cost (quantity * price, checked for overflow by the caller)
-- ARGV[7]  the line as JSON, e.g. ["<item>",2]
-- Answers {'OK'} | {'NOT_FOUND'} | {'CONFLICT', status} | {'OVERFLOW'}; changes nothing unless OK.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'NOT_FOUND'}
end
if status ~= 'OPEN' then
  return {'CONFLICT', status}
end
local res = redis.pcall('HINCRBY', KEYS[1], 'total_cost', ARGV[6])
if type(res) == 'table' and res.err then
  return {'OVERFLOW'}
end
local items = redis.call('HGET', KEYS[1], 'items')
if items == '[]' then
  items = '[' .. ARGV[7] .. ']'
else
  items = string.sub(items, 1, -2) .. ',' .. ARGV[7] .. ']'
end
redis.call('HSET', KEYS[1], 'items', items)
redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', 'ItemAdded', 'order', ARGV[2],
  'item', ARGV[3], 'quantity', ARGV[4], 'price', ARGV[5], 'cost', ARGV[6])
return {'OK'}
