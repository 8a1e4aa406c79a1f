-- Advance a cron function's cursor: the newest instant (ms) whose ticks are handled.
-- The cursor only moves forward, so a late or duplicate `fanout.cron` message never
-- rewinds it.
-- KEYS[1] cursor hash
-- ARGV[1] new cursor (ms)  ARGV[2] skipped records created  ARGV[3] tick of the run started (ms) or ''
-- Returns 1 when the cursor moved, else 0.
local moved = 0
local cur = tonumber(redis.call('HGET', KEYS[1], 'at') or '-1')
if tonumber(ARGV[1]) > cur then
  redis.call('HSET', KEYS[1], 'at', ARGV[1])
  moved = 1
end
if tonumber(ARGV[2]) > 0 then
  redis.call('HINCRBY', KEYS[1], 'skipped', ARGV[2])
end
if ARGV[3] ~= '' then
  local last = tonumber(redis.call('HGET', KEYS[1], 'run') or '-1')
  if tonumber(ARGV[3]) > last then
    redis.call('HSET', KEYS[1], 'run', ARGV[3])
  end
end
return moved
