-- Debounce: the pending run of a key and when it is due (fanout._core.flow_math.debounce_due).
-- KEYS[1] hash {run, first (ms), due (ms)}
-- ARGV[1] run id this event would start  ARGV[2] now (ms)  ARGV[3] period (ms)
-- ARGV[4] timeout (ms, 0 = none)  ARGV[5] a pending run found already started ('' = none)
-- Returns {run id, due (ms), 'new' | 'pending'}: 'new' when the caller must create
-- the run (also on a retry of the event that opened it).
local run = redis.call('HGET', KEYS[1], 'run')
if run and ARGV[5] ~= '' and run == ARGV[5] then
  redis.call('DEL', KEYS[1])
  run = false
end
local now, period, timeout = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl = period + timeout + 3600000
if not run then
  local due = string.format('%.3f', now + period)
  redis.call('HSET', KEYS[1], 'run', ARGV[1], 'first', ARGV[2], 'due', due)
  redis.call('PEXPIRE', KEYS[1], math.ceil(ttl))
  return {ARGV[1], due, 'new'}
end
if run == ARGV[1] then
  return {run, redis.call('HGET', KEYS[1], 'due'), 'new'}
end
local due = now + period
if timeout > 0 then
  due = math.min(due, tonumber(redis.call('HGET', KEYS[1], 'first')) + timeout)
end
due = string.format('%.3f', math.max(due, tonumber(redis.call('HGET', KEYS[1], 'due'))))
redis.call('HSET', KEYS[1], 'due', due)
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl))
return {run, due, 'pending'}
