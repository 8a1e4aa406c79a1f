-- Idempotency: claim a key for a run for a while (set-if-absent with a TTL).
-- KEYS[1] the key   ARGV[1] run id   ARGV[2] seconds
-- Returns the run that owns the key (ARGV[1] when the claim is ours, also on a retry).
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return ARGV[1]
