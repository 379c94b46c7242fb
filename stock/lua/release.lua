-- Compensates an aborted saga on the stock side (on CheckoutAborted): puts reserved stock back;
-- when the saga never reserved (or its reservation overtook nothing yet), leaves a tombstone so a
-- late CheckoutStarted is refused. Either way logs StockReleased, the order's confirmation.
-- KEYS[1]  ssaga:<sid>   KEYS[2] log:stock   KEYS[3..] item:<id> of each summed line
-- ARGV[1]  log_id   ARGV[2] saga id   ARGV[3] order   ARGV[4] the lines (JSON)
-- ARGV[5..] quantity of each line, in KEYS order
-- Answers {'OK', released} | {'DUP', state}.
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'RELEASED' or state == 'TOMBSTONE' then
  -- Already compensated: change nothing, but confirm again, so that a re-driven abort whose first
  -- confirmation was lost (dead-lettered) still completes the saga.
  redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', 'StockReleased', 'saga', ARGV[2],
    'order', ARGV[3], 'items', ARGV[4], 'released', '0')
  return {'DUP', state}
end
local released = '0'
if state == 'RESERVED' then
  for i = 3, #KEYS do
    redis.call('HINCRBY', KEYS[i], 'stock', ARGV[i + 2])
  end
  released = '1'
end
local next_state = 'RELEASED'
if not state then
  next_state = 'TOMBSTONE'
end
redis.call('HSET', KEYS[1], 'state', next_state, 'order', ARGV[3])
redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', 'StockReleased', 'saga', ARGV[2],
  'order', ARGV[3], 'items', ARGV[4], 'released', released)
return {'OK', released}
