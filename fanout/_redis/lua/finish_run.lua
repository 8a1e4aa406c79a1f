-- Finish a run: terminal status, output or error, and the retention clock starts.
-- KEYS[1] run hash
-- ARGV[1] token ('' = no lease needed)  ARGV[2] status  ARGV[3] now  ARGV[4] retention seconds
-- then field, value pairs.  Returns 1, or 0 when the lease was lost or the run already
-- ended, or 2 when a run that completed had a cancel requested during its last pass:
-- it ends 'cancelled' (its code finished; the output is kept, the reason is its error).
local st = redis.call('HGET', KEYS[1], 'st')
if not st or st == 'completed' or st == 'failed' or st == 'cancelled' or st == 'skipped' then
  return 0
end
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then
  return 0
end
local status, result = ARGV[2], 1
local cx = redis.call('HGET', KEYS[1], 'cx')
if status == 'completed' and cx then
  status, result = 'cancelled', 2
end
redis.call('HSET', KEYS[1], 'st', status, 't1', ARGV[3], 'lease', '', 'lu', '0', 'wake', '0')
if #ARGV > 4 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 5))
end
if result == 2 then
  redis.call('HSET', KEYS[1], 'err', cx)
end
redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return result
