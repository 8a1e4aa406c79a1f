-- Throttle: GCRA that delays instead of refusing (fanout._core.flow_math.gcra does the same).
-- KEYS[1] zset: member '' -> theoretical arrival time (ms); run id -> its start (ms)
-- ARGV[1] run id  ARGV[2] now (ms)  ARGV[3] period (ms)  ARGV[4] limit  ARGV[5] burst
-- Returns the run's start time (ms) as a string; a retried router gets the same one.
local got = redis.call('ZSCORE', KEYS[1], ARGV[1])
if got then return got end
local now, period = tonumber(ARGV[2]), tonumber(ARGV[3])
local interval = period / tonumber(ARGV[4])
local tolerance = (tonumber(ARGV[5]) - 1) * interval
local tat = tonumber(redis.call('ZSCORE', KEYS[1], '') or '0')
if tat < now then tat = now end
local start = math.max(now, tat - tolerance)
local new_tat = math.max(tat, start) + interval
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - period))
redis.call('ZADD', KEYS[1], new_tat, '', start, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(new_tat - now + period) + 1000)
return string.format('%.3f', start)
