-- Cancel a run.  A run between passes (queued, sleeping, waiting, or waiting for a
-- retry) is cancelled at once; a run inside a pass is flagged, and the pass stops
-- at its next step boundary (a step already running finishes).
-- KEYS[1] run hash   ARGV[1] now  ARGV[2] retention seconds  ARGV[3] reason JSON
-- KEYS[2] the metrics hash (optional): a run cancelled here is counted as ended.
-- Returns 'cancelled', 'flagged', 'ended' (already terminal) or 'missing'.
-- Metrics (KEYS[2], the metrics hash, when counting is on): a histogram is one
-- counter per fixed bucket ('h|<name>|<app>|<fn>|<le>') and a sum ('hs|...').
local BUCKETS = {'0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30', '60', '120', '300', '600', '1800', '3600', '21600', '86400'}
local function observe(name, labels, v)
  if v < 0 then v = 0 end
  local le = '+Inf'
  for _, b in ipairs(BUCKETS) do
    if v <= tonumber(b) then le = b break end
  end
  redis.call('HINCRBY', KEYS[2], 'h|' .. name .. '|' .. labels .. '|' .. le, 1)
  redis.call('HINCRBYFLOAT', KEYS[2], 'hs|' .. name .. '|' .. labels, v)
end
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
if KEYS[2] then
  local f = redis.call('HMGET', KEYS[1], 'app', 'fn', 'c')
  local lab = (f[1] or '') .. '|' .. (f[2] or '')
  redis.call('HINCRBY', KEYS[2], 'c|runs_ended|' .. lab .. '|cancelled', 1)
  local c = tonumber(f[3] or '')
  if c then observe('run_duration', lab, tonumber(ARGV[1]) - c) end
end
redis.call('HSET', KEYS[1], 'st', 'cancelled', 't1', ARGV[1], 'lease', '', 'lu', '0',
           'wake', '0', 'err', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 'cancelled'
