-- Release the lease at the end of a pass that did not finish the run.
-- KEYS[1] run hash
-- ARGV[1] token  ARGV[2] status  ARGV[3] wake (0 = none)
-- ARGV[4] the step field the run now waits on ('' = none): if a resolver already
--         finished that step, the run is queued at once instead of waiting
-- ARGV[5..] field, value pairs to set (run fields, and the pass's deferred step records)
-- Returns {seq, resolved}, false when the lease was lost, or {-1, 0} when a cancel
-- was requested (the caller then finishes the run as cancelled).
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then
  return false
end
-- The pairs carry the step records the pass deferred: write them first, so a run
-- cancelled meanwhile still shows the steps it ran.
if #ARGV > 4 then
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
