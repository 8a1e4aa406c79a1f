-- End a pass and begin the run's next one under the same lease, in one call: what
-- end_pass does for a run handed to the broker ('queued'), then what begin_pass does,
-- without the message between them (a worker going on to the next step in-process).
-- KEYS[1] run hash
-- ARGV[1] token  ARGV[2] now  ARGV[3] the new lease_until (s)  ARGV[4] the same in ms;
-- both '0': the lease is kept as it is (the caller renews it only once a third of it
-- has gone by, as the lease thread would; a chain of quick steps writes no lease and
-- moves no timer)
-- ARGV[5..] field, value pairs to set (run fields, and the pass's deferred step records)
-- KEYS[2] the metrics hash (optional): the attempts in the step records are counted
-- (as end_pass counts them). KEYS[3] the registry of functions with runs (optional,
-- see _indexes): a version the pass ran on (the 'vs' pair) is indexed.
-- KEYS[4] the run's timer shard (_predicates: TKEY; absent where the store
-- moves it in a pipeline beside the script): the lease's recovery timer moves to the
-- new lease expiry.
-- Returns false when the lease is no longer ours (nothing is written: the run and its
-- timer are the new holder's); {'cancel', app, fn, k, d1..dk} when a cancel was
-- requested (the step records are written, the lease is kept: the caller finishes
-- the run as cancelled, as after end_pass's -1); else {'ok', app, fn, k, d1..dk,
-- field, value, ...}: the hash as the next pass begins. d1..dk: the durations of the
-- attempts counted (the step_duration histogram), k = 0 when not counting.
--#include _predicates
--#include _metrics
--#include _indexes
local rid = KEYS[1]:match(':run:{(.*)}$')
-- One read of the whole hash, as begin_pass: its fields decide, the step records it
-- holds are what the pairs replace (counted as end_pass counts them), and (changed
-- below) it is the reply.
local all, at, get = read_whole()
if get('lease') ~= ARGV[1] then
  return false
end
local app, fn = get('app') or '', get('fn') or ''
local head = {'ok', app, fn, 0}
if MKEY then
  -- count_steps reads the values replaced from f[n + j] for the j-th step pair.
  local f, idx = {}, {}
  for i = 5, #ARGV - 1, 2 do
    if string.sub(ARGV[i], 1, 2) == 's:' then
      idx[#idx + 1] = i + 1
      f[#idx] = get(ARGV[i])
    end
  end
  local obs = count_steps(f, 0, idx, app .. '|' .. fn, {})
  head[4] = #obs
  for _, d in ipairs(obs) do head[#head + 1] = d end
end
local cx = get('cx')
for i = 5, #ARGV - 1, 2 do
  if ARGV[i] == 'cx' then cx = ARGV[i + 1] end
  if ARGV[i] == 'vs' and IX then
    ix_versions(get('fk'), ARGV[i + 1], ix_ms(get('c')), rid)
  end
end
local renew = ARGV[4] ~= '0'
if TKEY and renew then redis.call('ZADD', TKEY, ARGV[4], rid) end
if cx then
  if #ARGV > 4 then redis.call('HSET', KEYS[1], unpack(ARGV, 5, #ARGV)) end
  head[1] = 'cancel'
  return head
end
-- The pairs first (a field named twice takes its last value), then the pass sequence
-- moved on and the lease renewed, as end_pass then begin_pass would leave them.
local set = {}
for i = 5, #ARGV do set[#set + 1] = ARGV[i] end
for _, v in ipairs({'seq', tostring((tonumber(get('seq') or '0') or 0) + 1), 'st', 'running',
                    'wake', '0', 'wd', '0'}) do
  set[#set + 1] = v
end
if renew then
  set[#set + 1], set[#set + 2] = 'lu', ARGV[3]
end
if not get('t0') then
  set[#set + 1], set[#set + 2] = 't0', ARGV[2]
end
-- The reply is the hash as it is now: what was read, with what was just set.
write_whole(all, at, set)
for _, v in ipairs(all) do head[#head + 1] = v end
return head
