-- Retires saga records of final sagas (the log parser's archiving pass): removes each record
-- that exists and logs them all, as they were, in one RecordsRetired entry of the partition's
-- log, so that replaying the log still reproduces the database exactly.
-- On the order side it also removes the sagas' members from the partition's saga index, in the
-- same script (index_members.lua is prepended), so that the index never outlives a record.
-- KEYS[1]  the partition's log   KEYS[2..] the records (all of that partition)
-- ARGV[1]  log_id
-- ARGV[2]  'index' on the order side: then KEYS[2] is logparser:index:{o<k>}, the records start
--          at KEYS[3], and ARGV[3..] are their saga ids, in order
-- Answers the number of records retired (0: none existed, nothing logged).
local out = {}
local first = 2
if ARGV[2] == 'index' then
  first = 3
end
for i = first, #KEYS do
  local h = redis.call('HGETALL', KEYS[i])
  if #h > 0 then
    if first == 3 then
      index_drop(KEYS[2], KEYS[i], ARGV[i])
    end
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
