-- Cancel a run.  A run between passes (queued, sleeping, waiting, or waiting for a
-- retry) is cancelled at once; a run inside a pass is flagged, and the pass stops
-- at its next step boundary (a step already running finishes).
-- KEYS[1] run hash   ARGV[1] now  ARGV[2] retention seconds  ARGV[3] reason JSON
-- KEYS[2] the metrics hash (optional; '' when off and KEYS[3] is given): a run
-- cancelled here is counted as ended.
-- KEYS[3] the registry of functions with runs (optional, see _indexes): a run cancelled here moves
-- from its function's active set to the cancelled ones and into the ended feed.
-- Returns 'cancelled', 'flagged', 'ended' (already terminal) or 'missing'; when
-- counting, a cancel is {'cancelled', app, fn, the run's duration ('' when unknown)}.
--#include _predicates
--#include _metrics
--#include _indexes
local f = redis.call('HMGET', KEYS[1], 'st', 'lease', 'lu', 'seq', 'app', 'fn', 'c', 'fk')
local st = f[1]
if not st then return 'missing' end
if ended(st) then
  return 'ended'
end
local lease = f[2]
local lu = tonumber(f[3] or '0')
if lease and lease ~= '' and lu > tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'cx', ARGV[3])
  return 'flagged'
end
local out = 'cancelled'
if MKEY then
  local lab = (f[5] or '') .. '|' .. (f[6] or '')
  redis.call('HINCRBY', MKEY, 'c|runs_ended|' .. lab .. '|cancelled', 1)
  local c = tonumber(f[7] or '')
  out = {'cancelled', f[5] or '', f[6] or '', c and tostring(tonumber(ARGV[1]) - c) or ''}
end
redis.call('HSET', KEYS[1], 'st', 'cancelled', 't1', ARGV[1], 'lease', '', 'lu', '0',
           'wake', '0', 'err', ARGV[3], 'seq', (tonumber(f[4] or '0') or 0) + 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
if IX then ix_end(f[8], 'cancelled', ix_ms(f[7]), KEYS[1]:match(':run:{(.*)}$'), ARGV[1]) end
return out
