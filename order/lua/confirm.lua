-- Records that one participant finished compensating an aborted saga (on its compensation event,
-- e.g. StockReleased): removes it from the saga's pending set. When none is left, the saga is done:
-- the order opens again (if this saga still holds it) and waiting checkouts are woken.
-- KEYS[1]  saga:{o<k>}:<sid>   KEYS[2] order:{o<k>}:<id>   KEYS[3] log:order:{o<k>}
-- ARGV[1]  log_id   ARGV[2] saga id   ARGV[3] the participant's name
-- ARGV[4]  the wake-up channel (not a key: no slot), on which a done saga is announced as
-- `<sid>\nabort\n<reason>` (common::saga::Announcement: the waiting checkout needs no read)
-- Answers {'OK', reopened} | {'DUP'} | {'IGNORED', decision} | {'UNKNOWN'}.
local s = redis.call('HMGET', KEYS[1], 'decision', 'order', 'pending')
if not s[1] then
  return {'UNKNOWN'}
end
if s[1] ~= 'abort' then
  return {'IGNORED', s[1]}
end
local rest, found = {}, false
for name in string.gmatch(s[3] or '', '%S+') do
  if name == ARGV[3] then
    found = true
  else
    rest[#rest + 1] = name
  end
end
if not found then
  return {'DUP'}
end
local left = table.concat(rest, ' ')
redis.call('HSET', KEYS[1], 'pending', left)
local reopened = '0'
if left == '' then
  redis.call('HSET', KEYS[1], 'done', '1')
  local o = redis.call('HMGET', KEYS[2], 'status', 'saga')
  if o[1] == 'CHECKING_OUT' and o[2] == ARGV[2] then
    redis.call('HSET', KEYS[2], 'status', 'OPEN', 'saga', '')
    reopened = '1'
  end
end
redis.call('XADD', KEYS[3], '*', 'log_id', ARGV[1], 'type', 'CompensationConfirmed', 'saga', ARGV[2],
  'order', s[2], 'part', ARGV[3], 'reopened', reopened)
if left == '' then
  local reason = redis.call('HGET', KEYS[1], 'reason') or ''
  redis.call('PUBLISH', ARGV[4], ARGV[2] .. '\nabort\n' .. reason)
end
return {'OK', reopened}
