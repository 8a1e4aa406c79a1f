-- Rate limit: a sliding-window log of the runs admitted in the last period.
-- KEYS[1] zset run id -> admitted at (ms)
-- ARGV[1] run id  ARGV[2] now (ms)  ARGV[3] period (ms)  ARGV[4] limit
-- Returns 1 when the run is admitted (also when it already was: a retried router),
-- 0 when the limit is reached (the run is skipped).
local now, period = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - period))
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(period) + 1000)
return 1
