-- Re-time or remove timers we claimed, unless someone re-armed them meanwhile.
-- KEYS[1] timers zset  ARGV[1] the score we set when claiming
-- ARGV[2..] member, new score pairs ('' = remove the member)
local n = 0
for i = 2, #ARGV, 2 do
  local member, score = ARGV[i], ARGV[i + 1]
  local cur = redis.call('ZSCORE', KEYS[1], member)
  if cur and tonumber(cur) == tonumber(ARGV[1]) then
    if score == '' then
      n = n + redis.call('ZREM', KEYS[1], member)
    else
      redis.call('ZADD', KEYS[1], score, member)
      n = n + 1
    end
  end
end
return n
