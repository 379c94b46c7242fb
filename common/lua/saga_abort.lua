-- Decides a saga `abort` (on a participant's refusal, or a checkout timeout): compare-and-set on
-- the decision, so a commit that came first wins. Every participant is recorded as pending: each
-- compensates on the logged CheckoutAborted, which carries what they need, and confirms.
-- KEYS[1]  saga:<sid>   KEYS[2] log:order
-- ARGV[1]  log_id   ARGV[2] saga id   ARGV[3] reason
-- ARGV[4]  the participants to confirm, space-separated (from common::saga::PARTICIPANTS)
-- Answers {'OK'} | {'DECIDED', decision} | {'UNKNOWN'}.
local s = redis.call('HMGET', KEYS[1], 'decision', 'order', 'user', 'items', 'total')
if not s[1] then
  return {'UNKNOWN'}
end
if s[1] ~= 'none' then
  return {'DECIDED', s[1]}
end
redis.call('HSET', KEYS[1], 'decision', 'abort', 'reason', ARGV[3], 'pending', ARGV[4])
redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', 'CheckoutAborted', 'saga', ARGV[2],
  'order', s[2], 'user', s[3], 'items', s[4], 'total', s[5], 'reason', ARGV[3], 'pending', ARGV[4])
return {'OK'}
