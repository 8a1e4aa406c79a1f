-- Finish a run: terminal status, output or error, and the retention clock starts.
-- KEYS[1] run hash
-- ARGV[1] token ('' = no lease needed)  ARGV[2] status  ARGV[3] now  ARGV[4] retention seconds
-- then field, value pairs.  Returns 1, or 0 when the lease was lost or the run already
-- ended, or 2 when a run that completed had a cancel requested during its last pass:
-- it ends 'cancelled' (its code finished; the output is kept, the reason is its error).
-- KEYS[2] the metrics hash (optional): the run's end by status, its duration since
-- creation, and the attempts in the step records are counted.
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
if KEYS[2] then
  local f = redis.call('HMGET', KEYS[1], 'app', 'fn', 'c')
  local lab = (f[1] or '') .. '|' .. (f[2] or '')
  count_pairs(5, lab)
  redis.call('HINCRBY', KEYS[2], 'c|runs_ended|' .. lab .. '|' .. status, 1)
  local c = tonumber(f[3] or '')
  if c then observe('run_duration', lab, tonumber(ARGV[3]) - c) end
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
