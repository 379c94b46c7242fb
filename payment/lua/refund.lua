-- Compensates an aborted saga on the payment side (on CheckoutAborted): refunds a charge; when the
-- saga was never charged, leaves a tombstone so a late StockReserved is not charged. Either way
-- logs PaymentRefunded, the order's confirmation.
-- KEYS[1]  psaga:<sid>   KEYS[2] user:<id>   KEYS[3] log:payment
-- ARGV[1]  log_id   ARGV[2] saga id   ARGV[3] order   ARGV[4] user
-- Answers {'OK', refunded} | {'DUP', state}.
local p = redis.call('HMGET', KEYS[1], 'state', 'amount')
local state = p[1]
if state == 'REFUNDED' or state == 'TOMBSTONE' then
  -- Already compensated: change nothing, but confirm again (see stock/lua/release.lua).
  redis.call('XADD', KEYS[3], '*', 'log_id', ARGV[1], 'type', 'PaymentRefunded', 'saga', ARGV[2],
    'order', ARGV[3], 'user', ARGV[4], 'amount', '0', 'refunded', '0')
  return {'DUP', state}
end
local refunded = '0'
local amount = '0'
if state == 'CHARGED' then
  amount = p[2]
  if amount ~= '0' then
    redis.call('HINCRBY', KEYS[2], 'credit', amount)
  end
  refunded = '1'
end
local next_state = 'REFUNDED'
if not state then
  next_state = 'TOMBSTONE'
end
redis.call('HSET', KEYS[1], 'state', next_state, 'order', ARGV[3], 'user', ARGV[4])
redis.call('XADD', KEYS[3], '*', 'log_id', ARGV[1], 'type', 'PaymentRefunded', 'saga', ARGV[2],
  'order', ARGV[3], 'user', ARGV[4], 'amount', amount, 'refunded', refunded)
return {'OK', refunded}
