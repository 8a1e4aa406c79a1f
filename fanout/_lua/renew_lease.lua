-- Extend a lease we still hold.  KEYS[1] run hash  ARGV[1] token  ARGV[2] lease_until
if redis.call('HGET', KEYS[1], 'lease') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'lu', ARGV[2])
  return 1
end
return 0
