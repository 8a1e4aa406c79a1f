-- Finish a step from outside its run: an awaited event arrived, or an invoked
-- child run ended.  Exactly once: a step that is already final is left alone.
-- KEYS[1] run hash   ARGV[1] step field  ARGV[2] final record JSON
-- Returns 'enqueue' (the run was waiting: it is queued now and needs a pass; or the
-- step was the last branch of a parallel group to end),
-- 'set' (a pass holds the run and will see the record), 'done' or 'ended'.
local st = redis.call('HGET', KEYS[1], 'st')
if not st or st == 'completed' or st == 'failed' or st == 'cancelled' or st == 'skipped' then
  return 'ended'
end
local function final(raw)
  if not raw then return false end
  local s = cjson.decode(raw)['st']
  return s == 'completed' or s == 'failed'
end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if final(cur) then return 'done' end
local rec = ARGV[2]
local group, race = nil, false
if cur then
  -- A branch of a parallel group keeps its group (the fan-in set) in the final record
  -- (spliced in as text: the output is not decoded and encoded again).
  local x = cjson.decode(cur)['x']
  if type(x) == 'table' and x['group'] then
    group, race = x['group'], x['race'] == true
    local keep = {group = group}
    if race then keep['race'] = true end
    rec = string.sub(rec, 1, -2) .. ',"x":' .. cjson.encode(keep) .. '}'
  end
end
redis.call('HSET', KEYS[1], ARGV[1], rec)
if st == 'waiting' then
  redis.call('HSET', KEYS[1], 'st', 'queued', 'wake', '0')
  return 'enqueue'
end
if group then
  -- The last branch of the group to end brings the run back (a race: any branch).
  local joined = true
  if not race then
    for _, sid in ipairs(group) do
      if not final(redis.call('HGET', KEYS[1], 's:' .. sid)) then joined = false end
    end
  end
  if joined then return 'enqueue' end
end
return 'set'
