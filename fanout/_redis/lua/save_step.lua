-- Memoize a step record while the caller holds its lease: the run's lease for a
-- pass, or the step's own lease (field 'bl:<step>') for a parallel branch.
-- A completed or failed record is never overwritten: the first one saved wins.
-- KEYS[1] run hash
-- ARGV[1] token  ARGV[2] field  ARGV[3] record JSON  ARGV[4] lease field
-- ARGV[5..] for a branch: the fields of its parallel group (the fan-in set)
-- Returns {'ok', joined}, {'exists', json, joined}, {'lost'}, or {'cancel', reason}
-- when a cancel was requested during the pass (the record is saved; the pass stops).
-- joined is 1 when every field of the group now holds a final record.
-- KEYS[2] the metrics hash (optional): an executed attempt is counted, and the
-- 'ok' or 'cancel' reply goes on with app, fn and the attempt's duration.
--#include _predicates
--#include _metrics
local f = redis.call('HMGET', KEYS[1], ARGV[4], ARGV[2], 'cx', 'app', 'fn')
if f[1] ~= ARGV[1] then
  return {'lost'}
end
local function joined()
  if #ARGV < 5 then return 0 end
  for i = 5, #ARGV do
    if not final(redis.call('HGET', KEYS[1], ARGV[i])) then return 0 end
  end
  return 1
end
local cur = f[2]
if final(cur) then
  return {'exists', cur, joined()}
end
local d = nil
if MKEY then
  d = count_attempt(ARGV[3], cur or nil, (f[4] or '') .. '|' .. (f[5] or ''))
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
local cx = f[3]
local out
if cx and ARGV[4] == 'lease' then out = {'cancel', cx} else out = {'ok', joined()} end
if d then
  out[3], out[4], out[5] = f[4] or '', f[5] or '', d
end
return out
