-- Records that one participant finished compensating an aborted saga (on StockReleased or
-- PaymentRefunded). When both have, the saga is done: the order opens again (if this saga still
-- holds it) and waiting checkouts are woken.
-- KEYS[1]  saga:<sid>   KEYS[2] order:<id>   KEYS[3] log:order   KEYS[4] the wake-up channel
-- ARGV[1]  log_id   ARGV[2] saga id   ARGV[3] part (stock | payment)
-- Answers {'OK', reopened} | {'DUP'} | {'IGNORED', decision} | {'UNKNOWN'}.
local s = redis.call('HMGET', KEYS[1], 'decision', 'order', 'stock_ok', 'payment_ok')
if not s[1] then
  return {'UNKNOWN'}
end
if s[1] ~= 'abort' then
  return {'IGNORED', s[1]}
end
local mine, other
if ARGV[3] == 'stock' then
  mine, other = s[3], s[4]
else
  mine, other = s[4], s[3]
end
if mine == '1' then
  return {'DUP'}
end
redis.call('HSET', KEYS[1], ARGV[3] .. '_ok', '1')
local reopened = '0'
if other == '1' then
  redis.call('HSET', KEYS[1], 'done', '1')
  local o = redis.call('HMGET', KEYS[2], 'status', 'saga')
  if o[1] == 'CHECKING_OUT' and o[2] == ARGV[2] then
    redis.call('HSET', KEYS[2], 'status', 'OPEN', 'saga', '')
    reopened = '1'
  end
end
redis.call('XADD', KEYS[3], '*', 'log_id', ARGV[1], 'type', 'CompensationConfirmed', 'saga', ARGV[2],
  'order', s[2], 'part', ARGV[3], 'reopened', reopened)
if other == '1' then
  redis.call('PUBLISH', KEYS[4], ARGV[2])
end
return {'OK', reopened}
