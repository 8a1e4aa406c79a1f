-- Give a pending debounced run a later event and push its start back.
-- KEYS[1] run hash
-- ARGV[1] event JSON  ARGV[2] event ids JSON  ARGV[3] event ts (ms)  ARGV[4] due (s)
-- Returns the run's new wake time (s) as a string, or false when the run has
-- started or ended (the caller opens a new debounce).  The latest event (by ts)
-- wins; an older one only pushes the start back.
if redis.call('HGET', KEYS[1], 'st') ~= 'queued' or redis.call('HGET', KEYS[1], 't0') then
  return false
end
if tonumber(ARGV[3]) >= tonumber(redis.call('HGET', KEYS[1], 'dts') or '0') then
  redis.call('HSET', KEYS[1], 'event', ARGV[1], 'ev', ARGV[2], 'dts', ARGV[3])
end
local wake = math.max(tonumber(ARGV[4]), tonumber(redis.call('HGET', KEYS[1], 'nb') or '0'))
local dls = redis.call('HGET', KEYS[1], 'dls')
if dls and wake > tonumber(dls) then wake = tonumber(dls) end
local s = string.format('%.3f', wake)
redis.call('HSET', KEYS[1], 'wake', s)
return s
