-- Batching: the open batch of a key.
-- KEYS[1] hash {run, n, due (ms)}
-- ARGV[1] run id this event would open  ARGV[2] now (ms)  ARGV[3] max size
-- ARGV[4] timeout (ms)  ARGV[5] an open batch found already started ('' = none)
-- Returns {run id, due (ms), position, opened (0/1), full (0/1)}.  A full batch is
-- closed here: the next event opens a new one.
local run = redis.call('HGET', KEYS[1], 'run')
if run and ARGV[5] ~= '' and run == ARGV[5] then
  redis.call('DEL', KEYS[1])
  run = false
end
local opened = 0
if not run then
  run = ARGV[1]
  opened = 1
  redis.call('HSET', KEYS[1], 'run', run, 'n', 0,
             'due', string.format('%.3f', tonumber(ARGV[2]) + tonumber(ARGV[4])))
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) + 3600000)
end
local due = redis.call('HGET', KEYS[1], 'due')
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local full = 0
if n >= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  full = 1
end
return {run, due, n, opened, full}
