-- Extend a lease we still hold (the run's, or a branch's 'bl:<step>').
-- KEYS[1] run hash  ARGV[1] token  ARGV[2] lease_until  ARGV[3] lease field
if ARGV[3] == 'lease' then
  if redis.call('HGET', KEYS[1], 'lease') == ARGV[1] then
    redis.call('HSET', KEYS[1], 'lu', ARGV[2])
    return 1
  end
  return 0
end
if redis.call('HGET', KEYS[1], ARGV[3]) == ARGV[1] then
  redis.call('HSET', KEYS[1], ARGV[3] .. ':u', ARGV[2])
  return 1
end
return 0
