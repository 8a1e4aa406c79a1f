-- Create a run if it does not exist yet (the run id is derived, so this is the
-- idempotency point for duplicate events and redelivered router messages).
-- KEYS[1] run hash   ARGV: field, value, field, value, ...
-- Returns false when created, else {status, seq, started_at or ''}.
local st = redis.call('HGET', KEYS[1], 'st')
if st then
  return {st, redis.call('HGET', KEYS[1], 'seq') or '0', redis.call('HGET', KEYS[1], 't0') or ''}
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return false
