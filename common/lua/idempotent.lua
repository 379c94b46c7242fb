-- Idempotency-Key inside a transition script (common/src/idempotency.rs, `idempotent`).
-- `idempotent(base, transition)` runs `transition` (the script's own body, `base` keys) as is
-- when the script was called with `base` keys. Called with one key more, the answer record
-- (idem:{<the entity's tag>}:<key>, same slot as the entity), and two arguments more
-- (fingerprint, retention in seconds), it first looks in the record: a reply stored for this
-- fingerprint is returned again and nothing changes; one stored for another request answers
-- {'IDEMPOTENCY_MISMATCH', <that request>}. Otherwise the transition runs and its reply, whatever
-- it is (a refusal too: the first answer is the answer), is stored with the change, atomically.
local function idempotent(base, transition)
  if #KEYS <= base then
    return transition()
  end
  local record = table.remove(KEYS)
  local ttl = table.remove(ARGV)
  local fp = table.remove(ARGV)
  local bound = redis.call('HGET', record, 'fp')
  if bound and bound ~= fp then
    return {'IDEMPOTENCY_MISMATCH', bound}
  end
  local stored = redis.call('HGET', record, 'reply')
  if stored then
    return cjson.decode(stored)
  end
  local reply = transition()
  redis.call('HSET', record, 'fp', fp, 'reply', cjson.encode(reply))
  redis.call('EXPIRE', record, ttl)
  return reply
end
