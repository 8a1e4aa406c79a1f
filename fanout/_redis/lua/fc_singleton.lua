-- Singleton: the active run of a key.
-- KEYS[1] hash {run = active run id}
-- ARGV[1] run id  ARGV[2] mode ('skip' | 'cancel')
-- ARGV[3] a holder known to have ended ('' = none): it is replaced
-- Returns {'ok', previous or ''}, {'held', holder} (skip) or {'replaced', previous} (cancel).
local cur = redis.call('HGET', KEYS[1], 'run')
if not cur or cur == ARGV[1] or (ARGV[3] ~= '' and cur == ARGV[3]) then
  redis.call('HSET', KEYS[1], 'run', ARGV[1])
  return {'ok', cur or ''}
end
if ARGV[2] == 'cancel' then
  redis.call('HSET', KEYS[1], 'run', ARGV[1])
  return {'replaced', cur}
end
return {'held', cur}
