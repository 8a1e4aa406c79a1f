-- Concurrency: take a slot in each constraint (one or two) at once, or wait.
-- KEYS  slots 1, waiting 1 [, slots 2, waiting 2]  (all under one hash tag)
--       slots: zset member -> expiry (ms): a pass 'run:token' until its lease ends,
--              or a waiter woken for it, reserved until it comes (then it expires)
--       waiting: zset waiter -> score (waiting since minus priority, ms)
-- ARGV[1] holder (run:token)  ARGV[2] waiter (p|fn|run or b|fn|run|step)
-- ARGV[3] now (ms)  ARGV[4] lease until (ms)  ARGV[5] waiting score
-- ARGV[6] reservation until (ms)  ARGV[7..] limit of each constraint
-- Free room goes to the lowest score first: a caller with waiters ahead of it
-- waits, and those waiters get the room reserved and are woken.
-- Returns {'ok' | 'wait', waiter to wake, ...}.
local n = #KEYS / 2
local now, score, waiter = tonumber(ARGV[3]), tonumber(ARGV[5]), ARGV[2]
local woken = {}
local function grant(i, count)
  if count <= 0 then return end
  local slots, waiting = KEYS[2 * i - 1], KEYS[2 * i]
  for _, w in ipairs(redis.call('ZRANGE', waiting, 0, count - 1)) do
    redis.call('ZREM', waiting, w)
    redis.call('ZADD', slots, ARGV[6], w)
    table.insert(woken, w)
  end
end
local free, mine, blocked, any = {}, {}, {}, false
for i = 1, n do
  local slots, waiting = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  mine[i] = redis.call('ZSCORE', slots, waiter) ~= false
  free[i] = tonumber(ARGV[6 + i]) - redis.call('ZCARD', slots) + (mine[i] and 1 or 0)
  if mine[i] then
    blocked[i] = false
  else
    blocked[i] = free[i] <= 0 or redis.call('ZCOUNT', waiting, '-inf', '(' .. score) >= free[i]
  end
  any = any or blocked[i]
end
if not any then
  for i = 1, n do
    local slots, waiting = KEYS[2 * i - 1], KEYS[2 * i]
    redis.call('ZREM', slots, waiter)
    redis.call('ZADD', slots, ARGV[4], ARGV[1])
    redis.call('PEXPIRE', slots, 86400000)
    redis.call('ZREM', waiting, waiter)
    grant(i, free[i] - 1)
  end
  return {'ok', unpack(woken)}
end
for i = 1, n do
  local slots, waiting = KEYS[2 * i - 1], KEYS[2 * i]
  if blocked[i] then
    redis.call('ZADD', waiting, 'NX', score, waiter)
    redis.call('PEXPIRE', waiting, 86400000)
  else
    redis.call('ZREM', waiting, waiter)
    redis.call('ZREM', slots, waiter)  -- a reservation is given back while we wait elsewhere
  end
  grant(i, free[i])
end
return {'wait', unpack(woken)}
