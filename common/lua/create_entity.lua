-- Creates an entity (an item or a user) and logs its creation, atomically.
-- KEYS[1]  the entity's hash (item:<id> | user:<id>)
-- KEYS[2]  the service log (log:stock | log:payment)
-- ARGV[1]  log_id   ARGV[2] event type   ARGV[3] entity field name (item | user)   ARGV[4] entity id
-- ARGV[5..] field, value pairs: stored in the hash and copied into the log entry
local fields = {}
for i = 5, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', ARGV[2], ARGV[3], ARGV[4], unpack(fields))
return {'OK'}
