-- Creates (or overwrites) the entities of one partition among "0" .. "n-1" with the same fields,
-- and logs one entry for them in that partition's log (replay regenerates the partition's ids).
-- KEYS[1]  the partition's log   KEYS[2..] the hashes of the partition's entities
-- ARGV[1]  log_id   ARGV[2] event type   ARGV[3] n (of the whole batch)
-- ARGV[4..] field, value pairs set on every entity and copied into the log entry
local fields = {}
for i = 4, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
for i = 2, #KEYS do
  redis.call('HSET', KEYS[i], unpack(fields))
end
redis.call('XADD', KEYS[1], '*', 'log_id', ARGV[1], 'type', ARGV[2], 'n', ARGV[3], unpack(fields))
return {'OK'}
