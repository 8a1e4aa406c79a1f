-- Memoize a step record, while the caller still holds the lease.
-- A completed or failed record is never overwritten: the first one saved wins.
-- KEYS[1] run hash
-- ARGV[1] token  ARGV[2] field  ARGV[3] record JSON
-- Returns {'ok'}, {'exists', json} or {'lost'}.
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then
  return {'lost'}
end
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if cur then
  local rec = cjson.decode(cur)
  if rec['st'] == 'completed' or rec['st'] == 'failed' then
    return {'exists', cur}
  end
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return {'ok'}
