-- Release the lease at the end of a pass that did not finish the run.
-- KEYS[1] run hash
-- ARGV[1] token  ARGV[2] status  ARGV[3] wake (0 = none)
-- ARGV[4] the step field the run now waits on ('' = none): if a resolver already
--         finished that step, the run is queued at once instead of waiting
-- ARGV[5..] field, value pairs to set (run fields, and the pass's deferred step records)
-- Returns {seq, resolved}, false when the lease was lost, or {-1, 0} when a cancel
-- was requested (the caller then finishes the run as cancelled).
-- KEYS[2] the metrics hash (optional): the attempts in the step records are counted.
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
local function labels()
  local f = redis.call('HMGET', KEYS[1], 'app', 'fn')
  return (f[1] or '') .. '|' .. (f[2] or '')
end
-- A step record written for an attempt that executed (kind run or send_event,
-- final or retrying, with a start and an end) counts once: not when the same
-- attempt is written again.
local function count_attempt(field, raw, lab)
  local ok, rec = pcall(cjson.decode, raw)
  if not ok or type(rec) ~= 'table' then return end
  local k, st = rec['k'] or 'run', rec['st']
  if (k ~= 'run' and k ~= 'send_event') or not rec['t0'] or not rec['t1'] then return end
  if st ~= 'completed' and st ~= 'failed' and st ~= 'retrying' then return end
  local cur = redis.call('HGET', KEYS[1], field)
  if cur then
    local prev = cjson.decode(cur)
    if prev['n'] == rec['n'] and prev['st'] == st then return end
  end
  -- (the attempts are the step_duration observations: no counter of their own)
  if st ~= 'completed' then
    redis.call('HINCRBY', KEYS[2], 'c|step_failures|' .. lab, 1)
  end
  observe('step_duration', lab, tonumber(rec['t1']) - tonumber(rec['t0']))
end
local function count_pairs(first, lab)
  for i = first, #ARGV - 1, 2 do
    if string.sub(ARGV[i], 1, 2) == 's:' then
      lab = lab or labels()
      count_attempt(ARGV[i], ARGV[i + 1], lab)
    end
  end
end
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then
  return false
end
-- The pairs carry the step records the pass deferred: write them first, so a run
-- cancelled meanwhile still shows the steps it ran.
if #ARGV > 4 then
  if KEYS[2] then count_pairs(5) end
  redis.call('HSET', KEYS[1], unpack(ARGV, 5))
end
if redis.call('HGET', KEYS[1], 'cx') then
  return {-1, 0}
end
local status, wake, resolved = ARGV[2], ARGV[3], 0
if ARGV[4] ~= '' then
  local raw = redis.call('HGET', KEYS[1], ARGV[4])
  if raw then
    local st = cjson.decode(raw)['st']
    if st == 'completed' or st == 'failed' then
      status, wake, resolved = 'queued', '0', 1
    end
  end
end
redis.call('HSET', KEYS[1], 'st', status, 'lease', '', 'lu', '0', 'wake', wake)
return {redis.call('HINCRBY', KEYS[1], 'seq', 1), resolved}
