-- Retires saga records of final sagas (the log parser's archiving pass): removes each record
-- that exists and logs them all, as they were, in one RecordsRetired entry of the partition's
-- log, so that replaying the log still reproduces the database exactly.
-- KEYS[1]  the partition's log   KEYS[2..] the records (all of that partition)
-- ARGV[1]  log_id
-- Answers the number of records retired (0: none existed, nothing logged).
local out = {}
for i = 2, #KEYS do
  local h = redis.call('HGETALL', KEYS[i])
  if #h > 0 then
    local fields = {}
    for j = 1, #h, 2 do
      fields[h[j]] = h[j + 1]
    end
    out[#out + 1] = {key = KEYS[i], fields = fields}
    redis.call('DEL', KEYS[i])
  end
end
if #out == 0 then
  return 0
end
redis.call('XADD', KEYS[1], '*', 'log_id', ARGV[1], 'type', 'RecordsRetired',
  'records', cjson.encode(out))
return #out
