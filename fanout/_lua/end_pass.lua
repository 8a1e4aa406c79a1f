-- Release the lease at the end of a pass that did not finish the run.
-- KEYS[1] run hash
-- ARGV[1] token  ARGV[2] status  ARGV[3] wake (0 = none)  then field, value pairs
-- Returns the new pass sequence number, or false when the lease was lost.
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then
  return false
end
redis.call('HSET', KEYS[1], 'st', ARGV[2], 'lease', '', 'lu', '0', 'wake', ARGV[3])
if #ARGV > 3 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 4))
end
return redis.call('HINCRBY', KEYS[1], 'seq', 1)
