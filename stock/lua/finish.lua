-- Logs the stock side's outcome of a saga whose items span several stock partitions, once every
-- partition answered: StockRejected (one refused and the others were released first) or
-- StockReleased (every partition compensated an abort); a reservation's outcome, StockReserved, is
-- logged by the home partition's reserve.lua (mode `last`). It runs in the saga's home partition
-- (the highest of its items') and records the outcome there, so that a redelivered reservation
-- logs no second outcome, and none after a release; a release is confirmed again every time (as in
-- release.lua).
-- KEYS[1]  ssaga:{s<home>}:<sid>   KEYS[2] log:stock:{s<home>}
-- ARGV[1]  log_id   ARGV[2] saga id   ARGV[3] type (StockReserved | StockRejected | StockReleased)
-- ARGV[4]  parts (how many partitions)   ARGV[5] order   ARGV[6..] the entry's other fields,
-- name, value pairs
-- Answers {'OK'} | {'DUP', outcome}.
local outcome = redis.call('HGET', KEYS[1], 'outcome')
if outcome and ARGV[3] ~= 'StockReleased' then
  return {'DUP', outcome}
end
-- The order too: the home partition may hold none of the saga's reservations yet (a partition
-- before it refused), and every stock saga record names its order.
redis.call('HSET', KEYS[1], 'outcome', ARGV[3], 'order', ARGV[5])
local fields = {'order', ARGV[5]}
for i = 6, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', ARGV[3], 'saga', ARGV[2],
  'parts', ARGV[4], unpack(fields))
return {'OK'}
