-- Admits a checkout (run while holding the Redlock lock:order:<id>): an open order becomes
-- CHECKING_OUT under a new saga, whose record is created and whose start is logged, atomically.
-- KEYS[1]  order:<id>   KEYS[2] saga:<sid>   KEYS[3] log:order
-- ARGV[1]  log_id   ARGV[2] order id   ARGV[3] saga id
-- ARGV[4]  '' (the fast path: the caller has not read the order) or the `items` field as the
--          caller read it (compare-and-set: an addItem in between makes the caller re-read)
-- ARGV[5]  with ARGV[4]: the caller's summed lines (JSON)   ARGV[6] now (ms)
-- On the fast path the order's lines are the saga's lines as they are stored (`[["item",qty],...]`,
-- the form common::saga::encode_lines writes) when no item repeats; when one does (or the field
-- is not a list of lines) the script answers SUM and the caller sums them (common::saga::sum_lines,
-- the one implementation of summing) and calls again with both.
-- Answers {'OK', sid} | {'PAID', sid} | {'JOIN', running sid} | {'NOT_FOUND'} | {'EMPTY'}
--         | {'SUM', items} | {'CHANGED'}; changes nothing unless OK.
local o = redis.call('HMGET', KEYS[1], 'status', 'saga', 'items', 'user_id', 'total_cost')
if not o[1] then
  return {'NOT_FOUND'}
end
if o[1] == 'PAID' then
  return {'PAID', o[2]}
end
if o[1] == 'CHECKING_OUT' then
  return {'JOIN', o[2]}
end
if o[3] == '[]' then
  return {'EMPTY'}
end
local summed = ARGV[5]
if ARGV[4] == '' then
  local ok, lines = pcall(cjson.decode, o[3])
  if not ok or type(lines) ~= 'table' then
    return {'SUM', o[3]}
  end
  local seen = {}
  for _, line in ipairs(lines) do
    local item = type(line) == 'table' and line[1]
    if type(item) ~= 'string' or seen[item] then
      return {'SUM', o[3]}
    end
    seen[item] = true
  end
  if #lines == 0 then
    return {'EMPTY'}
  end
  summed = o[3]
elseif o[3] ~= ARGV[4] then
  return {'CHANGED'}
end
redis.call('HSET', KEYS[1], 'status', 'CHECKING_OUT', 'saga', ARGV[3])
redis.call('HSET', KEYS[2], 'order', ARGV[2], 'user', o[4], 'total', o[5], 'items', summed,
  'decision', 'none', 'reason', '', 'started_ms', ARGV[6], 'pending', '', 'done', '0')
redis.call('XADD', KEYS[3], '*', 'log_id', ARGV[1], 'type', 'CheckoutStarted', 'saga', ARGV[3],
  'order', ARGV[2], 'user', o[4], 'items', summed, 'total', o[5], 'started_ms', ARGV[6])
return {'OK', ARGV[3]}
