-- Charges a saga's total to its user (on StockReserved), if the credit suffices. A saga seen
-- before (including a tombstone left by an abort that overtook this event) is not charged again.
-- KEYS[1]  psaga:<sid>   KEYS[2] user:<id>   KEYS[3] log:payment
-- ARGV[1]  log_id   ARGV[2] saga id   ARGV[3] order   ARGV[4] user   ARGV[5] total (canonical)
-- Answers {'OK'} | {'REJECTED', reason} | {'DUP', state}.
-- `less` (exact decimal comparison) comes from common/lua/decimal.lua, prepended.

local seen = redis.call('HGET', KEYS[1], 'state')
if seen then
  return {'DUP', seen}
end
local credit = redis.call('HGET', KEYS[2], 'credit')
local reason = nil
if not credit then
  reason = 'unknown user `' .. ARGV[4] .. '`'
elseif less(credit, ARGV[5]) then
  reason = 'not enough credit: user `' .. ARGV[4] .. '` has ' .. credit .. ', the order costs ' .. ARGV[5]
end
if reason then
  redis.call('HSET', KEYS[1], 'state', 'REJECTED', 'order', ARGV[3], 'user', ARGV[4], 'amount', '0')
  redis.call('XADD', KEYS[3], '*', 'log_id', ARGV[1], 'type', 'PaymentRejected', 'saga', ARGV[2],
    'order', ARGV[3], 'user', ARGV[4], 'reason', reason)
  return {'REJECTED', reason}
end
if ARGV[5] ~= '0' then
  redis.call('HINCRBY', KEYS[2], 'credit', '-' .. ARGV[5])
end
redis.call('HSET', KEYS[1], 'state', 'CHARGED', 'order', ARGV[3], 'user', ARGV[4], 'amount', ARGV[5])
redis.call('XADD', KEYS[3], '*', 'log_id', ARGV[1], 'type', 'PaymentCharged', 'saga', ARGV[2],
  'order', ARGV[3], 'user', ARGV[4], 'amount', ARGV[5])
return {'OK'}
