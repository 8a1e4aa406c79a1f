-- Take the run's lease for one pass and return its whole state in one round trip.
-- KEYS[1] run hash
-- ARGV[1] token  ARGV[2] now  ARGV[3] lease_until  ARGV[4] expected seq ('' = any)
-- KEYS[2] the metrics hash (optional): the pass's queue delay (now minus 'qa', the
-- time the pass could start, or the creation time) is observed.
-- Returns {'ok', field, value, ...} or {reason, detail}.
-- Metrics (KEYS[2], the metrics hash, when counting is on): a histogram is one
-- counter per fixed bucket ('h|<name>|<app>|<fn>|<le>') and a sum ('hs|...').
local BUCKETS = {'0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30', '60', '120', '300', '600', '1800', '3600', '21600', '86400'}
local function observe(name, labels, v)
  if v < 0 then v = 0 end
  local le = '+Inf'
  for _, b in ipairs(BUCKETS) do
    if v <= tonumber(b) then le = b break end
  end
  redis.call('HINCRBY', KEYS[2], 'h|' .. name .. '|' .. labels .. '|' .. le, 1)
  redis.call('HINCRBYFLOAT', KEYS[2], 'hs|' .. name .. '|' .. labels, v)
end
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
if KEYS[2] then
  local f = redis.call('HMGET', KEYS[1], 'app', 'fn', 'qa', 'c')
  local since = tonumber(f[3] or '') or tonumber(f[4] or '')
  if since then
    observe('queue_delay', (f[1] or '') .. '|' .. (f[2] or ''), now - since)
  end
end
local all = redis.call('HGETALL', KEYS[1])
table.insert(all, 1, 'ok')
return all
