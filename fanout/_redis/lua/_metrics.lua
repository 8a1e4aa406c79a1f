-- Metrics, inlined by the store where a script has the line `--#include _metrics`.
-- KEYS[2] is the metrics hash when counting is on (absent when it is off: then
-- nothing below is built). Counters are fields 'c|<name>|<app>|<fn>[|<status>]'. A
-- histogram is one counter per fixed bucket ('h|<name>|<app>|<fn>|<le>'; a bucket
-- counts its own observations) and a sum in whole microseconds ('hu|<name>|<app>|<fn>'),
-- all written with HINCRBY: a command called from a script costs about as much as a
-- small script, so the helpers read nothing of their own and decode nothing twice.
local observe, count_attempt
if KEYS[2] then
  local BUCKETS = {'0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30', '60', '120', '300', '600', '1800', '3600', '21600', '86400'}
  local BOUNDS = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400}
  observe = function(name, lab, v)
    if v < 0 then v = 0 end
    local le = '+Inf'
    for i = 1, 20 do
      if v <= BOUNDS[i] then le = BUCKETS[i] break end
    end
    redis.call('HINCRBY', KEYS[2], 'h|' .. name .. '|' .. lab .. '|' .. le, 1)
    redis.call('HINCRBY', KEYS[2], 'hu|' .. name .. '|' .. lab, math.floor(v * 1000000 + 0.5))
  end
  -- A step record written for an attempt that executed (kind run or send_event,
  -- final or retrying, with a start and an end) counts once: not when the record it
  -- replaces (prev: raw JSON, or nil) is the same attempt. Each such attempt is one
  -- step_duration observation (step_attempts is that histogram's count).
  count_attempt = function(raw, prev, lab)
    local ok, rec = pcall(cjson.decode, raw)
    if not ok or type(rec) ~= 'table' then return end
    local k, st = rec['k'] or 'run', rec['st']
    if (k ~= 'run' and k ~= 'send_event') or not rec['t0'] or not rec['t1'] then return end
    if st ~= 'completed' and st ~= 'failed' and st ~= 'retrying' then return end
    if prev then
      local pok, p = pcall(cjson.decode, prev)
      if pok and type(p) == 'table' and p['n'] == rec['n'] and p['st'] == st then return end
    end
    if st ~= 'completed' then
      redis.call('HINCRBY', KEYS[2], 'c|step_failures|' .. lab, 1)
    end
    observe('step_duration', lab, tonumber(rec['t1']) - tonumber(rec['t0']))
  end
end
-- One HMGET of the run fields named in `read` and, when counting, of the step
-- records among ARGV's field, value pairs from index 5 on (the values they replace).
-- Returns the values, the number of run fields, and the ARGV indexes of those step
-- records (nil when not counting); count_steps counts them.
local function read_run(read)
  local n, at = #read, nil
  if KEYS[2] and #ARGV > 4 then
    at = {}
    for i = 5, #ARGV - 1, 2 do
      if string.sub(ARGV[i], 1, 2) == 's:' then
        read[#read + 1] = ARGV[i]
        at[#at + 1] = i + 1
      end
    end
  end
  return redis.call('HMGET', KEYS[1], unpack(read)), n, at
end
local function count_steps(f, n, at, lab)
  for j = 1, #at do count_attempt(ARGV[at[j]], f[n + j] or nil, lab) end
end
