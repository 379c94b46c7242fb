-- Stores the answer of a keyed request whose answer no single script makes (checkout,
-- batch_init) in its claim (common/src/idempotency.rs). The first answer stored stays.
-- KEYS[1]  idemclaim:{<the key's tag>}:<key>
-- ARGV[1]  fingerprint   ARGV[2] HTTP status   ARGV[3] JSON body   ARGV[4] retention in seconds
-- Answers {'OK'}, or {'IGNORED'} when the claim is gone (expired) or belongs to another request
-- or already holds an answer.
if redis.call('HGET', KEYS[1], 'fp') ~= ARGV[1] or redis.call('HEXISTS', KEYS[1], 'status') == 1 then
  return {'IGNORED'}
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'body', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {'OK'}
