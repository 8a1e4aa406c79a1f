-- A worker writes the functions it declares and drops entries no worker refreshed.
-- KEYS[1] the declared hash  ARGV[1] now (unix s)  ARGV[2] the oldest live time
-- ARGV[3..] entries '<fn key> <digest>'
for i = 3, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
end
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  local t = tonumber(all[i + 1])
  if t == nil or t < tonumber(ARGV[2]) then
    n = n + redis.call('HDEL', KEYS[1], all[i])
  end
end
return n
