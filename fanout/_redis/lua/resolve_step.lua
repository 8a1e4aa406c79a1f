-- Finish a step from outside its run: an awaited event arrived, or an invoked
-- child run ended.  Exactly once: a step that is already final is left alone.
-- KEYS[1] run hash   ARGV[1] step field  ARGV[2] final record JSON
-- ARGV[3] now (optional): a waiting run queued here may start from then on ('qa')
-- Returns 'enqueue' (the run was waiting: it is queued now and needs a pass),
-- 'set' (a pass holds the run and will see the record), 'done' or 'ended'.
local st = redis.call('HGET', KEYS[1], 'st')
if not st or st == 'completed' or st == 'failed' or st == 'cancelled' or st == 'skipped' then
  return 'ended'
end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local s = cjson.decode(cur)['st']
  if s == 'completed' or s == 'failed' then return 'done' end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if st == 'waiting' then
  redis.call('HSET', KEYS[1], 'st', 'queued', 'wake', '0')
  if ARGV[3] then redis.call('HSET', KEYS[1], 'qa', ARGV[3]) end
  return 'enqueue'
end
return 'set'
