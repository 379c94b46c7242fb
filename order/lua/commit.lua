-- Decides a saga `commit` when its payment was charged (on PaymentCharged): compare-and-set on
-- the decision, so a timeout abort that came first wins and this charge is refunded instead.
-- KEYS[1]  saga:{o<k>}:<sid>   KEYS[2] order:{o<k>}:<id>   KEYS[3] log:order:{o<k>}
-- ARGV[1]  log_id   ARGV[2] saga id   ARGV[3] the wake-up channel (not a key: no slot), on which
-- it announces `<sid>\ncommit\n` (common::saga::Announcement: the waiting checkout needs no read)
-- Answers {'OK'} | {'DECIDED', decision} | {'UNKNOWN'} | {'FENCED', status, saga}.
local s = redis.call('HMGET', KEYS[1], 'decision', 'order')
if not s[1] then
  return {'UNKNOWN'}
end
if s[1] ~= 'none' then
  return {'DECIDED', s[1]}
end
local o = redis.call('HMGET', KEYS[2], 'status', 'saga')
if o[1] ~= 'CHECKING_OUT' or o[2] ~= ARGV[2] then
  return {'FENCED', tostring(o[1]), tostring(o[2])}
end
redis.call('HSET', KEYS[1], 'decision', 'commit', 'done', '1')
redis.call('HSET', KEYS[2], 'status', 'PAID')
redis.call('XADD', KEYS[3], '*', 'log_id', ARGV[1], 'type', 'CheckoutCommitted', 'saga', ARGV[2],
  'order', s[2])
redis.call('PUBLISH', ARGV[3], ARGV[2] .. '\ncommit\n')
return {'OK'}
