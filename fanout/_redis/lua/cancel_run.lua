-- Cancel a run.  A run between passes (queued, sleeping, waiting, or waiting for a
-- retry) is cancelled at once; a run inside a pass is flagged, and the pass stops
-- at its next step boundary (a step already running finishes).
-- KEYS[1] run hash   ARGV[1] now  ARGV[2] retention seconds  ARGV[3] reason JSON
-- Returns 'cancelled', 'flagged', 'ended' (already terminal) or 'missing'.
local st = redis.call('HGET', KEYS[1], 'st')
if not st then return 'missing' end
if st == 'completed' or st == 'failed' or st == 'cancelled' or st == 'skipped' then
  return 'ended'
end
local lease = redis.call('HGET', KEYS[1], 'lease')
local lu = tonumber(redis.call('HGET', KEYS[1], 'lu') or '0')
if lease and lease ~= '' and lu > tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'cx', ARGV[3])
  return 'flagged'
end
redis.call('HSET', KEYS[1], 'st', 'cancelled', 't1', ARGV[1], 'lease', '', 'lu', '0',
           'wake', '0', 'err', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 'cancelled'
