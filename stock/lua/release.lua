-- Compensates an aborted saga in one stock partition (on CheckoutAborted): puts reserved stock
-- back; when the saga never reserved here (or its reservation has not arrived yet), leaves a
-- tombstone so that a late reservation is refused. Mode `whole` (all the saga's items live here):
-- logs StockReleased, the order's confirmation, every time (a repeated compensation confirms
-- again, so that a re-driven abort whose first confirmation was lost still completes the saga).
-- Mode `part`: logs StockPartReleased; the handler confirms once every partition is released.
-- KEYS[1]  ssaga:{s<k>}:<sid>   KEYS[2] log:stock:{s<k>}   KEYS[3..] item:{s<k>}:<id> of each line
-- ARGV[1]  log_id   ARGV[2] saga id   ARGV[3] order   ARGV[4] the partition's lines (JSON)
-- ARGV[5]  mode (whole | part)   ARGV[6..] quantity of each line, in KEYS order
-- Answers {'OK', released} | {'DUP', state}.
local function log(released)
  if ARGV[5] == 'whole' then
    redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', 'StockReleased', 'saga', ARGV[2],
      'order', ARGV[3], 'items', ARGV[4], 'released', released, 'parts', '1')
  else
    redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', 'StockPartReleased', 'saga', ARGV[2],
      'order', ARGV[3], 'items', ARGV[4], 'released', released)
  end
end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'RELEASED' or state == 'TOMBSTONE' then
  if ARGV[5] == 'whole' then
    log('0')
  end
  return {'DUP', state}
end
local released = '0'
if state == 'RESERVED' then
  for i = 3, #KEYS do
    redis.call('HINCRBY', KEYS[i], 'stock', ARGV[i + 3])
  end
  released = '1'
end
local next_state = 'RELEASED'
if not state then
  next_state = 'TOMBSTONE'
end
redis.call('HSET', KEYS[1], 'state', next_state, 'order', ARGV[3])
log(released)
return {'OK', released}
