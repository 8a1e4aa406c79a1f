-- Claim due timers: each member whose score is <= now is pushed back to `rearm`
-- (so a claimer that dies before acting lets another claim it later) and returned,
-- followed by the earliest score left in the set ('' when it is empty), so the
-- caller can sleep until exactly then.
-- KEYS[1] timers zset  ARGV[1] now  ARGV[2] rearm  ARGV[3] limit
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[2], member)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
due[#due + 1] = first[2] or ''
return due
