-- Take the run's lease for one pass and return its whole state in one round trip.
-- KEYS[1] run hash
-- ARGV[1] token  ARGV[2] now  ARGV[3] lease_until  ARGV[4] expected seq ('' = any)
-- Returns {'ok', field, value, ...} or {reason, detail}.
local st = redis.call('HGET', KEYS[1], 'st')
if not st then return {'missing'} end
if st == 'completed' or st == 'failed' or st == 'cancelled' or st == 'skipped' then
  return {'terminal', st}
end
local now = tonumber(ARGV[2])
if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= tonumber(redis.call('HGET', KEYS[1], 'seq') or '0') then
  return {'stale'}
end
local lease = redis.call('HGET', KEYS[1], 'lease')
local lu = tonumber(redis.call('HGET', KEYS[1], 'lu') or '0')
if lease and lease ~= '' and lu > now then
  return {'busy', tostring(lu)}
end
if redis.call('HGET', KEYS[1], 'cx') then
  return {'cancel'}
end
local wake = tonumber(redis.call('HGET', KEYS[1], 'wake') or '0')
if ARGV[4] == '' and wake > now + 0.05 then
  return {'early', tostring(wake)}
end
if lease and lease ~= '' then
  redis.call('HINCRBY', KEYS[1], 'takeovers', 1)
end
redis.call('HSET', KEYS[1], 'lease', ARGV[1], 'lu', ARGV[3], 'st', 'running', 'wake', '0', 'wd', '0')
if not redis.call('HGET', KEYS[1], 't0') then
  redis.call('HSET', KEYS[1], 't0', ARGV[2])
end
local all = redis.call('HGETALL', KEYS[1])
table.insert(all, 1, 'ok')
return all
