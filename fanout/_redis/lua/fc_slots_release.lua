-- Concurrency: give a slot back; the room goes to the first waiters, reserved for
-- them until they come.
-- KEYS  slots 1, waiting 1 [, slots 2, waiting 2]
-- ARGV[1] holder to remove ('' = none)
-- ARGV[2] waiter to forget, with any reservation it has ('' = none; a run that ended)
-- ARGV[3] now (ms)  ARGV[4] reservation until (ms)  ARGV[5..] limit of each constraint
-- Returns the waiters to wake.
local n = #KEYS / 2
local woken = {}
for i = 1, n do
  local slots, waiting = KEYS[2 * i - 1], KEYS[2 * i]
  if ARGV[1] ~= '' then redis.call('ZREM', slots, ARGV[1]) end
  if ARGV[2] ~= '' then
    redis.call('ZREM', waiting, ARGV[2])
    redis.call('ZREM', slots, ARGV[2])
  end
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', tonumber(ARGV[3]))
  local free = tonumber(ARGV[4 + i]) - redis.call('ZCARD', slots)
  if free > 0 then
    for _, w in ipairs(redis.call('ZRANGE', waiting, 0, free - 1)) do
      redis.call('ZREM', waiting, w)
      redis.call('ZADD', slots, ARGV[4], w)
      table.insert(woken, w)
    end
  end
end
return woken
