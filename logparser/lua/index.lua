-- The recovery pass's store for one order partition (logparser/src/recovery.rs): the index
-- entries of the sagas its new log:order entries touched, read from their records here (so
-- they are as new as the records), with the checkpoint and the open set, atomically.
-- (index_members.lua is prepended.)
-- KEYS[1] logparser:index:{o<k>}  KEYS[2] logparser:index-new:{o<k>}
-- KEYS[3] logparser:checkpoint:{o<k>}  KEYS[4] logparser:open:{o<k>}  KEYS[5..] saga records
-- ARGV[1] the checkpoint ('' : leave it)  ARGV[2] '1': first rename KEYS[2] over KEYS[1] (a
-- full pass's rebuilt index)  ARGV[3] n, the number of open sagas ('-1': leave the set)
-- ARGV[4..3+n] the open sagas  ARGV[4+n..] the saga ids of KEYS[5..], in order
-- Answers how many sagas were indexed.
if ARGV[2] == '1' then
  redis.call('RENAME', KEYS[2], KEYS[1])
end
-- The marker: the index exists (a partition without sagas still has it).
redis.call('ZADD', KEYS[1], 0, '!v1')
local n = tonumber(ARGV[3])
if n >= 0 then
  redis.call('DEL', KEYS[4])
  local i = 4
  while i <= 3 + n do
    local last = math.min(i + 499, 3 + n)
    redis.call('SADD', KEYS[4], unpack(ARGV, i, last))
    i = last + 1
  end
else
  n = 0
end
local indexed = 0
for k = 5, #KEYS do
  indexed = indexed + index_put(KEYS[1], KEYS[k], ARGV[3 + n + k - 4])
end
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[3], ARGV[1])
end
return indexed
