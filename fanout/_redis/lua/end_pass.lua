-- Release the lease at the end of a pass that did not finish the run.
-- KEYS[1] run hash
-- ARGV[1] token  ARGV[2] status  ARGV[3] wake (0 = none)
-- ARGV[4] the step field the run now waits on ('' = none): if a resolver already
--         finished that step, the run is queued at once instead of waiting
-- ARGV[5..] field, value pairs to set (run fields, and the pass's deferred step records)
-- Returns {seq, resolved}, false when the lease was lost, or {-1, 0} when a cancel
-- was requested (the caller then finishes the run as cancelled).
-- KEYS[2] the metrics hash (optional): the attempts in the step records are counted;
-- when any is, the reply goes on with app, fn and each attempt's duration.
-- KEYS[3] the registry of functions with runs (optional, see _indexes): a version the pass ran on
-- (the 'vs' pair) is indexed.
-- KEYS[4] the run's timer shard (_predicates: TKEY; absent where the store
-- arms it in a pipeline beside the script), and then ARGV ends with one more
-- argument after the pairs: the timer's new due time (ms), the wake-up or the
-- watchdog of a run handed to the broker. It replaces the lease's timer while the
-- lease is released, so it cannot race the next pass; a pass that lost its lease
-- leaves the timer to the lease's new holder. (_metrics reads the pairs up to
-- #ARGV - 1, so the odd last argument is never taken for a pair.)
--#include _predicates
--#include _metrics
--#include _indexes
local last = TKEY and #ARGV - 1 or #ARGV  -- the pairs are ARGV[5..last]
local function arm()
  if TKEY then redis.call('ZADD', TKEY, ARGV[#ARGV], KEYS[1]:match(':run:{(.*)}$')) end
end
local f, n, at = read_run({'lease', 'cx', 'seq', ARGV[4] ~= '' and ARGV[4] or 'lease', 'app', 'fn'})
if f[1] ~= ARGV[1] then
  return false
end
local obs = {}
if at then count_steps(f, n, at, (f[5] or '') .. '|' .. (f[6] or ''), obs) end
local function reply(a, b)
  if #obs == 0 then return {a, b} end
  return {a, b, f[5] or '', f[6] or '', unpack(obs)}
end
-- The pairs carry the step records the pass deferred: they are written even when
-- the run was cancelled meanwhile, so it still shows the steps it ran; else in the
-- same HSET as the release (a field named twice takes its last value).
local cx, raw = f[2], f[4]
for i = 5, last - 1, 2 do
  if ARGV[i] == 'cx' then cx = ARGV[i + 1] end
  if ARGV[i] == ARGV[4] then raw = ARGV[i + 1] end
  if ARGV[i] == 'vs' and IX then
    local g = redis.call('HMGET', KEYS[1], 'fk', 'c')
    ix_versions(g[1], ARGV[i + 1], ix_ms(g[2]), KEYS[1]:match(':run:{(.*)}$'))
  end
end
arm()
if cx then
  if last > 4 then redis.call('HSET', KEYS[1], unpack(ARGV, 5, last)) end
  return reply(-1, 0)
end
local status, wake, resolved = ARGV[2], ARGV[3], 0
if ARGV[4] ~= '' and raw then
  if final(raw) then
    status, wake, resolved = 'queued', '0', 1
  end
end
local seq = (tonumber(f[3] or '0') or 0) + 1
local set = {}
for i = 5, last do set[#set + 1] = ARGV[i] end
for _, v in ipairs({'st', status, 'lease', '', 'lu', '0', 'wake', wake, 'seq', seq}) do
  set[#set + 1] = v
end
redis.call('HSET', KEYS[1], unpack(set))
return reply(seq, resolved)
