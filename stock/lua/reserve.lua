-- Reserves a saga's items (on CheckoutStarted): all or nothing. A saga seen before (including a
-- tombstone left by an abort that overtook this event) is not applied again.
-- KEYS[1]  ssaga:<sid>   KEYS[2] log:stock   KEYS[3..] item:<id> of each summed line
-- ARGV[1]  log_id   ARGV[2] saga id   ARGV[3] order   ARGV[4] user   ARGV[5] total
-- ARGV[6]  the lines (JSON)   ARGV[7..] quantity of each line, in KEYS order (canonical decimals)
-- Answers {'OK'} | {'REJECTED', reason} | {'DUP', state}.
-- `less` (exact decimal comparison) comes from common/lua/decimal.lua, prepended.

local seen = redis.call('HGET', KEYS[1], 'state')
if seen then
  return {'DUP', seen}
end
local reason = nil
for i = 3, #KEYS do
  local item = string.sub(KEYS[i], 6)
  local current = redis.call('HGET', KEYS[i], 'stock')
  if not current then
    reason = 'unknown item `' .. item .. '`'
    break
  end
  if less(current, ARGV[i + 4]) then
    reason = 'not enough stock for item `' .. item .. '`: ' .. current .. ' left, ' .. ARGV[i + 4] .. ' needed'
    break
  end
end
if reason then
  redis.call('HSET', KEYS[1], 'state', 'REJECTED', 'order', ARGV[3])
  redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', 'StockRejected', 'saga', ARGV[2],
    'order', ARGV[3], 'reason', reason)
  return {'REJECTED', reason}
end
for i = 3, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'stock', '-' .. ARGV[i + 4])
end
redis.call('HSET', KEYS[1], 'state', 'RESERVED', 'order', ARGV[3], 'items', ARGV[6])
redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', 'StockReserved', 'saga', ARGV[2],
  'order', ARGV[3], 'user', ARGV[4], 'total', ARGV[5], 'items', ARGV[6])
return {'OK'}
