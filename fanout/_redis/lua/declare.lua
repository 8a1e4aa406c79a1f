-- A worker writes the functions it declares and drops entries no worker refreshed.
-- Times are the server's (TIME), so the workers' clocks need not agree.
-- KEYS[1] the declared hash  ARGV[1] seconds after which an entry is stale
-- ARGV[2..] entries '<fn key> <digest>'
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local oldest = now - tonumber(ARGV[1])
local stamp = string.format('%.3f', now)
for i = 2, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], stamp)
end
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  local w = tonumber(all[i + 1])
  if w == nil or w < oldest then
    n = n + redis.call('HDEL', KEYS[1], all[i])
  end
end
return n
