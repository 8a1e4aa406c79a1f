-- Finish a step from outside its run: an awaited event arrived, or an invoked
-- child run ended.  Exactly once: a step that is already final is left alone.
-- KEYS[1] run hash   ARGV[1] step field  ARGV[2] final record JSON
-- ARGV[3] now (optional): a waiting run queued here may start from then on ('qa')
-- Returns 'enqueue' (the run was waiting: it is queued now and needs a pass; or the
-- step was the last branch of a parallel group to end, or any branch of a race),
-- 'set' (a pass holds the run and will see the record), 'done' or 'ended'.
--#include _predicates
local st = redis.call('HGET', KEYS[1], 'st')
if not st or ended(st) then
  return 'ended'
end
local group, race = nil, false
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local rec = ARGV[2]
if cur then
  local old = cjson.decode(cur)
  if final_status(old['st']) then return 'done' end
  -- A branch of a parallel group (an invoke in ctx.group.parallel) joins its group.
  if type(old['x']) == 'table' and old['x']['group'] then
    group, race = old['x']['group'], old['x']['race'] == true
  end
  -- The final record keeps what the waiting one knew: when the wait began, and its
  -- details (an invoke's child run id, a wait's event, match and if). They are
  -- appended to the JSON text: re-encoding the record could alter its output.
  local new = cjson.decode(rec)
  local add = ''
  for _, k in ipairs({'t0', 'q', 'x'}) do
    if new[k] == nil and old[k] ~= nil then
      add = add .. ',"' .. k .. '":' .. cjson.encode(old[k])
    end
  end
  if add ~= '' and string.sub(rec, -1) == '}' then rec = string.sub(rec, 1, -2) .. add .. '}' end
end
redis.call('HSET', KEYS[1], ARGV[1], rec)
if st == 'waiting' then
  redis.call('HSET', KEYS[1], 'st', 'queued', 'wake', '0')
  if ARGV[3] then redis.call('HSET', KEYS[1], 'qa', ARGV[3]) end
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
