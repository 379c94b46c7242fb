-- Creates (or overwrites) entities "0" .. "n-1" with the same fields, and logs one entry for all.
-- KEYS[1]  the service log
-- ARGV[1]  log_id   ARGV[2] event type   ARGV[3] key prefix (item: | user:)   ARGV[4] n
-- ARGV[5..] field, value pairs set on every entity and copied into the log entry
local n = tonumber(ARGV[4])
local fields = {}
for i = 5, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
for i = 0, n - 1 do
  redis.call('HSET', ARGV[3] .. i, unpack(fields))
end
redis.call('XADD', KEYS[1], '*', 'log_id', ARGV[1], 'type', ARGV[2], 'n', ARGV[4], unpack(fields))
return {'OK'}
