-- Take the run's lease for one pass and return its whole state in one round trip.
-- KEYS[1] run hash
-- ARGV[1] token  ARGV[2] now  ARGV[3] lease_until  ARGV[4] expected seq ('' = any)
-- KEYS[4] the run's timer shard (_predicates: TKEY), ARGV[5] lease_until in ms (absent
-- when the store keeps the timer in a pipeline beside the script): the
-- lease's recovery timer is armed with the lease, a run that ended loses its timer,
-- and a busy or early run keeps one for its holder's lease expiry or its wake-up.
-- (KEYS[2] and KEYS[3] are the other run scripts': unused here.)
-- (The store observes the pass's queue delay from the fields returned: now minus
-- 'qa', the time the pass could start, or else 'c', the creation time.)
-- Returns {'ok', field, value, ...} or {reason, detail}.
--#include _predicates
local rid = TKEY and KEYS[1]:match(':run:{(.*)}$')
-- One read of the whole hash: its fields decide, and (changed below) are the reply.
local all, at, get = read_whole()
local f = {get('st'), get('seq'), get('lease'), get('lu'), get('cx'), get('wake'), get('t0'),
           get('takeovers')}
local st = f[1]
if not st or ended(st) then
  if TKEY then redis.call('ZREM', TKEY, rid) end
  if not st then return {'missing'} end
  return {'terminal', st}
end
local now = tonumber(ARGV[2])
if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= tonumber(f[2] or '0') then
  return {'stale'}
end
local lease = f[3]
local lu = tonumber(f[4] or '0')
if lease and lease ~= '' and lu > now then
  if TKEY then redis.call('ZADD', TKEY, 'GT', math.floor(lu * 1000), rid) end
  return {'busy', tostring(lu)}
end
-- From here the run is ours to move: its recovery timer fires at the lease's expiry
-- (for a cancel, the caller ends the run; if it dies first, the timer offers it again).
local wake = tonumber(f[6] or '0')
if TKEY then
  if not f[5] and ARGV[4] == '' and wake > now + 0.05 then
    redis.call('ZADD', TKEY, math.floor(wake * 1000), rid)
  else
    redis.call('ZADD', TKEY, ARGV[5], rid)
  end
end
if f[5] then
  return {'cancel'}
end
if ARGV[4] == '' and wake > now + 0.05 then
  return {'early', tostring(wake)}
end
local set = {'lease', ARGV[1], 'lu', ARGV[3], 'st', 'running', 'wake', '0', 'wd', '0'}
if lease and lease ~= '' then
  set[#set + 1], set[#set + 2] = 'takeovers', tostring((tonumber(f[8] or '0') or 0) + 1)
end
if not f[7] then
  set[#set + 1], set[#set + 2] = 't0', ARGV[2]
end
-- The reply is the hash as it is now: what was read, with what was just set.
write_whole(all, at, set)
table.insert(all, 1, 'ok')
return all
