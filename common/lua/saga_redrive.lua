-- Re-appends CheckoutAborted for a saga decided `abort` whose compensations are not all confirmed
-- (the log parser's re-drive), naming the participants still pending. Safe at any time: the
-- participants' compensations are idempotent and confirm again.
-- KEYS[1]  saga:<sid>   KEYS[2] log:order
-- ARGV[1]  log_id   ARGV[2] saga id
-- Answers {'OK'} | {'SKIPPED', decision, done} | {'UNKNOWN'}.
local s = redis.call('HMGET', KEYS[1], 'decision', 'order', 'user', 'items', 'total', 'reason', 'done',
  'pending')
if not s[1] then
  return {'UNKNOWN'}
end
if s[1] ~= 'abort' or s[7] == '1' then
  return {'SKIPPED', s[1], tostring(s[7])}
end
redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', 'CheckoutAborted', 'saga', ARGV[2],
  'order', s[2], 'user', s[3], 'items', s[4], 'total', s[5], 'reason', s[6], 'pending', s[8])
return {'OK'}
