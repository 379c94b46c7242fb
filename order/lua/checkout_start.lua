-- Admits a checkout (run while holding the Redlock lock:order:<id>): an open order becomes
-- CHECKING_OUT under a new saga, whose record is created and whose start is logged, atomically.
-- KEYS[1]  order:<id>   KEYS[2] saga:<sid>   KEYS[3] log:order
-- ARGV[1]  log_id   ARGV[2] order id   ARGV[3] saga id   ARGV[4] the `items` field as the caller
-- read it (compare-and-set: an addItem in between makes the caller re-read)
-- ARGV[5]  the summed lines (JSON)   ARGV[6] now (ms)
-- Answers {'OK', sid} | {'PAID', sid} | {'JOIN', running sid} | {'NOT_FOUND'} | {'CHANGED'}.
local o = redis.call('HMGET', KEYS[1], 'status', 'saga', 'items', 'user_id', 'total_cost')
if not o[1] then
  return {'NOT_FOUND'}
end
if o[1] == 'PAID' then
  return {'PAID', o[2]}
end
if o[1] == 'CHECKING_OUT' then
  return {'JOIN', o[2]}
end
if o[3] ~= ARGV[4] then
  return {'CHANGED'}
end
redis.call('HSET', KEYS[1], 'status', 'CHECKING_OUT', 'saga', ARGV[3])
redis.call('HSET', KEYS[2], 'order', ARGV[2], 'user', o[4], 'total', o[5], 'items', ARGV[5],
  'decision', 'none', 'reason', '', 'started_ms', ARGV[6], 'pending', '', 'done', '0')
redis.call('XADD', KEYS[3], '*', 'log_id', ARGV[1], 'type', 'CheckoutStarted', 'saga', ARGV[3],
  'order', ARGV[2], 'user', o[4], 'items', ARGV[5], 'total', o[5], 'started_ms', ARGV[6])
return {'OK', ARGV[3]}
