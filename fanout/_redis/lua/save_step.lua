-- Memoize a step record while the caller holds its lease: the run's lease for a
-- pass, or the step's own lease (field 'bl:<step>') for a parallel branch.
-- A completed or failed record is never overwritten: the first one saved wins.
-- KEYS[1] run hash
-- ARGV[1] token  ARGV[2] field  ARGV[3] record JSON  ARGV[4] lease field
-- ARGV[5..] for a branch: the fields of its parallel group (the fan-in set)
-- Returns {'ok', joined}, {'exists', json, joined}, {'lost'}, or {'cancel', reason}
-- when a cancel was requested during the pass (the record is saved; the pass stops).
-- joined is 1 when every field of the group now holds a final record.
-- KEYS[2] the metrics hash (optional): an executed attempt is counted.
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
if redis.call('HGET', KEYS[1], ARGV[4]) ~= ARGV[1] then
  return {'lost'}
end
local function final(raw)
  if not raw then return false end
  local st = cjson.decode(raw)['st']
  return st == 'completed' or st == 'failed'
end
local function joined()
  if #ARGV < 5 then return 0 end
  for i = 5, #ARGV do
    if not final(redis.call('HGET', KEYS[1], ARGV[i])) then return 0 end
  end
  return 1
end
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if final(cur) then
  return {'exists', cur, joined()}
end
if KEYS[2] then count_attempt(ARGV[2], ARGV[3], labels()) end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
local cx = redis.call('HGET', KEYS[1], 'cx')
if cx and ARGV[4] == 'lease' then return {'cancel', cx} end
return {'ok', joined()}
