-- Subtracts a positive amount from an entity's counter if it has enough, and logs it, atomically.
-- The counter never goes below zero.
-- KEYS[1]  the entity's hash   KEYS[2] the service log
-- ARGV[1]  log_id   ARGV[2] event type   ARGV[3] entity field name   ARGV[4] entity id
-- ARGV[5]  counter field (stock | credit)   ARGV[6] amount (canonical positive decimal)
-- Answers {'OK', new value} | {'NOT_FOUND'} | {'INSUFFICIENT', current}; changes nothing unless OK.
-- `less` (exact decimal comparison) comes from common/lua/decimal.lua, prepended.

local current = redis.call('HGET', KEYS[1], ARGV[5])
if not current then
  return {'NOT_FOUND'}
end
if less(current, ARGV[6]) then
  return {'INSUFFICIENT', current}
end
redis.call('HINCRBY', KEYS[1], ARGV[5], '-' .. ARGV[6])
redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', ARGV[2], ARGV[3], ARGV[4], 'amount', ARGV[6])
return {'OK', redis.call('HGET', KEYS[1], ARGV[5])}
