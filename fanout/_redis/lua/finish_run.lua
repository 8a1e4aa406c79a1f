-- Finish a run: terminal status, output or error, and the retention clock starts.
-- KEYS[1] run hash
-- ARGV[1] token ('' = no lease needed)  ARGV[2] status  ARGV[3] now  ARGV[4] retention seconds
-- then field, value pairs.  Returns {1}, or {0} when the lease was lost or the run
-- already ended, or {2} when a run that completed had a cancel requested during its
-- last pass: it ends 'cancelled' (its code finished; the output is kept, the reason
-- is its error).
-- KEYS[2] the metrics hash (optional): the run's end by status and the attempts in
-- the step records are counted, and the reply goes on with app, fn, the run's
-- duration since creation ('' when unknown) and each counted attempt's duration.
-- KEYS[3] the registry of functions with runs (optional, see _indexes): the run moves from its
-- function's active set to its status's and into the ended feed; a version it ran on and its declared output search attributes
-- are indexed.
-- KEYS[4] the run's timer shard (_predicates: TKEY; absent where the store
-- removes the timer in a pipeline beside the script): the run's timer is removed when
-- it ends, or when it had ended already, but not when another pass holds its lease.
--#include _predicates
--#include _metrics
--#include _indexes
local f, n, at = read_run({'st', 'lease', 'cx', 'seq', 'app', 'fn', 'c', 'fk', 'sa'})
local st = f[1]
local function unarm()
  if TKEY then redis.call('ZREM', TKEY, KEYS[1]:match(':run:{(.*)}$')) end
end
if not st or ended(st) then
  unarm()
  return {0}
end
if ARGV[1] ~= '' and f[2] ~= ARGV[1] then
  return {0}
end
unarm()
local status, result = ARGV[2], 1
local cx = f[3]
if status == 'completed' and cx then
  status, result = 'cancelled', 2
end
local out = {result}
if MKEY then
  local lab = (f[5] or '') .. '|' .. (f[6] or '')
  redis.call('HINCRBY', MKEY, 'c|runs_ended|' .. lab .. '|' .. status, 1)
  local c = tonumber(f[7] or '')
  out = {result, f[5] or '', f[6] or '', c and tostring(tonumber(ARGV[3]) - c) or ''}
  if at then count_steps(f, n, at, lab, out) end
end
redis.call('HSET', KEYS[1], 'st', status, 't1', ARGV[3], 'lease', '', 'lu', '0', 'wake', '0',
           'seq', (tonumber(f[4] or '0') or 0) + 1)
if #ARGV > 4 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 5))
end
if result == 2 then
  redis.call('HSET', KEYS[1], 'err', cx)
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
if IX then
  local rid, ms = KEYS[1]:match(':run:{(.*)}$'), ix_ms(f[7])
  ix_end(f[8], status, ms, rid, ARGV[3])
  for i = 5, #ARGV - 1, 2 do
    if ARGV[i] == 'vs' then ix_versions(f[8], ARGV[i + 1], ms, rid) end
    if ARGV[i] == 'out' and f[9] then ix_search(f[8], f[9], 'output', ARGV[i + 1], ms) end
  end
end
return out
