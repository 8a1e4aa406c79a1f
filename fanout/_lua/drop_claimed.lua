-- Remove timers we claimed, unless someone re-armed them meanwhile.
-- KEYS[1] timers zset  ARGV[1] the rearm score we set  ARGV[2..] members
local n = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[1]) then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
