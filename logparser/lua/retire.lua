-- Retires saga records of final sagas (the log parser's archiving pass): removes each record that
-- exists and logs them in one RecordsRetired entry of the partition's log, so that replaying the
-- log still reproduces the database exactly.
-- Mode 'index' (the order side): the records are logged as they were (`records`, JSON: the saga
-- list and the audit's count of retired sagas read them), and the sagas' members leave the
-- partition's saga index in the same script (index_members.lua is prepended), so that the index
-- never outlives a record.
-- Mode 'keys' (a participant's records): only their keys are logged (`keys`, separated by
-- spaces); their fields are what the history up to the entry built. Copying them was most of what
-- a retirement cost the databases (docs/BENCHMARKS.md).
-- KEYS[1]  the partition's log   KEYS[2..] the records (all of that partition)
-- ARGV[1]  log_id
-- ARGV[2]  'index': then KEYS[2] is logparser:index:{o<k>}, the records start at KEYS[3], and
--          ARGV[3..] are their saga ids, in order; 'keys': a participant's records
-- Answers the number of records retired (0: none existed, nothing logged).
if ARGV[2] == 'keys' then
  local gone = {}
  for i = 2, #KEYS do
    if redis.call('DEL', KEYS[i]) == 1 then
      gone[#gone + 1] = KEYS[i]
    end
  end
  if #gone == 0 then
    return 0
  end
  redis.call('XADD', KEYS[1], '*', 'log_id', ARGV[1], 'type', 'RecordsRetired',
    'keys', table.concat(gone, ' '))
  return #gone
end
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
