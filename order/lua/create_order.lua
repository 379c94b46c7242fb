-- Creates an open, empty order for a user and logs it, atomically.
-- KEYS[1]  order:<id>   KEYS[2] log:order
-- ARGV[1]  log_id   ARGV[2] order id   ARGV[3] user id
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'user_id', ARGV[3], 'total_cost', 0, 'items', '[]', 'status', 'OPEN', 'saga', '')
redis.call('XADD', KEYS[2], '*', 'log_id', ARGV[1], 'type', 'OrderCreated', 'order', ARGV[2], 'user', ARGV[3])
return {'OK'}
