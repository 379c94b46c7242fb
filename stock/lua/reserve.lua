-- Reserves a saga's items of one stock partition (on CheckoutStarted): all or nothing. A saga seen
-- before in this partition (including a tombstone left by an abort that overtook this event) is
-- not applied again.
-- Mode `whole` (the saga's items all live in this partition, the fast path): logs the saga's
-- outcome, StockReserved (with what payment needs) or StockRejected. Mode `part` (one partition of
-- several, reserved before the last): logs StockPartReserved / StockPartRejected. Mode `last` (the
-- last of several, the saga's home partition, every other one already reserved): a reservation
-- logs the outcome, StockReserved with `parts` and this partition's lines, and records it
-- (`outcome`) as finish.lua would; a refusal logs StockPartRejected, and the handler releases the
-- other partitions before it logs StockRejected (finish.lua).
-- KEYS[1]  ssaga:{s<k>}:<sid>   KEYS[2] log:stock:{s<k>}   KEYS[3..] item:{s<k>}:<id> of each line
-- ARGV[1]  log_id   ARGV[2] saga id   ARGV[3] order   ARGV[4] user   ARGV[5] total
-- ARGV[6]  the partition's lines (JSON)   ARGV[7] mode (whole | part | last)
-- ARGV[8]  parts (how many partitions the saga's items span)   ARGV[9..] quantity of each line, in KEYS order (canonical decimals)
-- Answers {'OK'} | {'REJECTED', reason} | {'DUP', state}.
-- `less` (exact decimal comparison) comes from common/lua/decimal.lua, prepended.

local seen = redis.call('HGET', KEYS[1], 'state')
if seen then
  return {'DUP', seen}
end
local whole = ARGV[7] == 'whole'
local reason = nil
for i = 3, #KEYS do
  local item = string.match(KEYS[i], '^item:{[^}]*}:(.*)$')
  local current = redis.call('HGET', KEYS[i], 'stock')
  if not current then
    reason = 'unknown item `' .. item .. '`'
    break
  end
  if less(current, ARGV[i + 6]) then
    reason = 'not enough stock for item `' .. item .. '`: ' .. current .. ' left, ' .. ARGV[i + 6] .. ' needed'
    break
  end
end
if reason then
  redis.call('HSET', KEYS[1], 'state', 'REJECTED', 'order', ARGV[3])
  if whole then
    redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', 'StockRejected', 'saga', ARGV[2],
      'order', ARGV[3], 'reason', reason, 'parts', '1')
  else
    redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', 'StockPartRejected', 'saga', ARGV[2],
      'order', ARGV[3], 'reason', reason)
  end
  return {'REJECTED', reason}
end
for i = 3, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'stock', '-' .. ARGV[i + 6])
end
if ARGV[7] == 'part' then
  redis.call('HSET', KEYS[1], 'state', 'RESERVED', 'order', ARGV[3], 'items', ARGV[6])
  redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', 'StockPartReserved', 'saga', ARGV[2],
    'order', ARGV[3], 'items', ARGV[6])
else
  if whole then
    redis.call('HSET', KEYS[1], 'state', 'RESERVED', 'order', ARGV[3], 'items', ARGV[6])
  else
    redis.call('HSET', KEYS[1], 'state', 'RESERVED', 'order', ARGV[3], 'items', ARGV[6],
      'outcome', 'StockReserved')
  end
  redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', 'StockReserved', 'saga', ARGV[2],
    'order', ARGV[3], 'user', ARGV[4], 'total', ARGV[5], 'items', ARGV[6], 'parts', ARGV[8])
end
return {'OK'}
