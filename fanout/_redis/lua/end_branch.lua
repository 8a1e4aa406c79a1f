-- Release a branch lease we hold.  KEYS[1] run hash  ARGV[1] token  ARGV[2] lease field
if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[1], ARGV[2], ARGV[2] .. ':u')
  return 1
end
return 0
