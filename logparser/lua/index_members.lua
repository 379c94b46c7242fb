-- The saga list's index (logparser/src/saga_index.rs builds the same members, `members`): in
-- the sorted set logparser:index:{o<k>} (every score 0, read by lexicographic ranges), a live
-- saga record <sid> started at <s> (ms, 15 digits) is
--   't\0<s>\0<sid>'  always; 'u\0<user>\0<s>\0<sid>'; 'o\0<order>\0<s>\0<sid>';
--   'i\0<s>\0<sid>' in flight, 'c\0…' compensating, 'a\0…' aborted (committed: none of them).
local function index_rest(started, sid)
  return string.rep('0', 15 - #started) .. started .. '\0' .. sid
end

-- Removes every member of saga `sid` (its record `record` still holds the fields).
local function index_drop(index, record, sid)
  local f = redis.call('HMGET', record, 'started_ms', 'user', 'order')
  if not (f[1] and f[2] and f[3]) then
    return
  end
  local s = index_rest(f[1], sid)
  redis.call('ZREM', index, 't\0' .. s, 'u\0' .. f[2] .. '\0' .. s, 'o\0' .. f[3] .. '\0' .. s,
    'i\0' .. s, 'c\0' .. s, 'a\0' .. s)
end

-- Writes saga `sid`'s members as its record `record` stands now; 0 when there is no record
-- (retired: retire.lua removed its members with it).
local function index_put(index, record, sid)
  local f = redis.call('HMGET', record, 'started_ms', 'user', 'order', 'decision', 'done')
  if not (f[1] and f[2] and f[3] and f[4]) then
    return 0
  end
  local s = index_rest(f[1], sid)
  redis.call('ZADD', index, 0, 't\0' .. s, 0, 'u\0' .. f[2] .. '\0' .. s, 0, 'o\0' .. f[3] .. '\0' .. s)
  redis.call('ZREM', index, 'i\0' .. s, 'c\0' .. s, 'a\0' .. s)
  if f[4] == 'none' then
    redis.call('ZADD', index, 0, 'i\0' .. s)
  elseif f[4] == 'abort' then
    if f[5] == '1' then
      redis.call('ZADD', index, 0, 'a\0' .. s)
    else
      redis.call('ZADD', index, 0, 'c\0' .. s)
    end
  end
  return 1
end
