-- Adds a positive amount to an entity's counter (stock or credit) and logs it, atomically.
-- KEYS[1]  the entity's hash   KEYS[2] the service log
-- ARGV[1]  log_id   ARGV[2] event type   ARGV[3] entity field name   ARGV[4] entity id
-- ARGV[5]  counter field (stock | credit)   ARGV[6] amount (canonical positive decimal)
-- Answers {'OK', new value} | {'NOT_FOUND'} | {'OVERFLOW'}; changes nothing unless OK.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'NOT_FOUND'}
end
local res = redis.pcall('HINCRBY', KEYS[1], ARGV[5], ARGV[6])
if type(res) == 'table' and res.err then
  return {'OVERFLOW'}
end
redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', ARGV[2], ARGV[3], ARGV[4], 'amount', ARGV[6])
return {'OK', redis.call('HGET', KEYS[1], ARGV[5])}
