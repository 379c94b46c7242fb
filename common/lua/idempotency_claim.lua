-- Binds an Idempotency-Key to one request, in the key's own partition (common/src/idempotency.rs).
-- KEYS[1]  idemclaim:{<the key's tag>}:<key>
-- ARGV[1]  the request's fingerprint (`POST /stock/add/<id>/5`)   ARGV[2] the value to pin on
--          first use (a new entity's id)   ARGV[3] retention in seconds
-- Answers {'NEW', pinned} the first time; {'SEEN', pinned} or {'SEEN', pinned, status, body}
-- (an answer stored by idempotency_finish.lua) for the same request again;
-- {'IDEMPOTENCY_MISMATCH', the bound fingerprint} for another request, changing nothing.
local bound = redis.call('HGET', KEYS[1], 'fp')
if not bound then
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'pinned', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return {'NEW', ARGV[2]}
end
if bound ~= ARGV[1] then
  return {'IDEMPOTENCY_MISMATCH', bound}
end
local r = redis.call('HMGET', KEYS[1], 'pinned', 'status', 'body')
if r[2] then
  return {'SEEN', r[1], r[2], r[3]}
end
return {'SEEN', r[1]}
