-- Metrics, inlined by the store where a script has the line `--#include _metrics`.
-- KEYS[2] is the metrics hash when counting is on (absent when it is off: then
-- nothing below is built). Counters are fields 'c|<name>|<app>|<fn>[|<status>]', one
-- HINCRBY each, atomic with the change of state they count. The duration histograms
-- are not written here (a command called from a script costs about as much as a
-- small script): a script returns the durations it measured, and the worker process
-- adds them to the same hash in batches (observations.py).
local count_attempt
if MKEY then
  -- A step record written for an attempt that executed (kind run or send_event,
  -- final or retrying, with a start and an end) counts once: not when the record it
  -- replaces (prev: raw JSON, or nil) is the same attempt. A failed attempt is
  -- counted here; the attempt's duration (seconds, as a string) is returned for the
  -- step_duration histogram, whose count is the step_attempts counter.
  count_attempt = function(raw, prev, lab)
    local ok, rec = pcall(cjson.decode, raw)
    if not ok or type(rec) ~= 'table' then return nil end
    local k, st = rec['k'] or 'run', rec['st']
    if (k ~= 'run' and k ~= 'send_event') or not rec['t0'] or not rec['t1'] then return nil end
    if st ~= 'completed' and st ~= 'failed' and st ~= 'retrying' then return nil end
    if prev then
      local pok, p = pcall(cjson.decode, prev)
      if pok and type(p) == 'table' and p['n'] == rec['n'] and p['st'] == st then return nil end
    end
    if st ~= 'completed' then
      redis.call('HINCRBY', MKEY, 'c|step_failures|' .. lab, 1)
    end
    return tostring(tonumber(rec['t1']) - tonumber(rec['t0']))
  end
end
-- One HMGET of the run fields named in `read` and, when counting, of the step
-- records among ARGV's field, value pairs from index 5 on (the values they replace).
-- Returns the values, the number of run fields, and the ARGV indexes of those step
-- records (nil when not counting); count_steps counts them.
local function read_run(read)
  local n, at = #read, nil
  if MKEY and #ARGV > 4 then
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
-- Count the step records read_run found, appending each counted attempt's duration
-- to `out` (a script's reply, which then ends with them).
local function count_steps(f, n, at, lab, out)
  for j = 1, #at do
    local d = count_attempt(ARGV[at[j]], f[n + j] or nil, lab)
    if d then out[#out + 1] = d end
  end
  return out
end
