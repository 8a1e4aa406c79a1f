-- Take the lease of one parallel branch (field 'bl:<step>'); branches of one run
-- execute at the same time, each under its own lease.
-- KEYS[1] run hash
-- ARGV[1] token  ARGV[2] now  ARGV[3] lease_until  ARGV[4] step field  ARGV[5] lease field
-- Returns {'ok', field, value, ...}, {'done', joined}, {'busy', until}, {'terminal'}.
--#include _predicates
local st = redis.call('HGET', KEYS[1], 'st')
if not st or ended(st) then
  return {'terminal'}
end
local raw = redis.call('HGET', KEYS[1], ARGV[4])
if not raw then return {'terminal'} end
local rec = cjson.decode(raw)
if final_status(rec['st']) then
  local joined = 1
  local group = (rec['x'] or {})['group'] or {}
  for _, sid in ipairs(group) do
    if not final(redis.call('HGET', KEYS[1], 's:' .. sid)) then joined = 0 end
  end
  return {'done', joined}
end
local until_field = ARGV[5] .. ':u'
local holder = redis.call('HGET', KEYS[1], ARGV[5])
local lu = tonumber(redis.call('HGET', KEYS[1], until_field) or '0')
if holder and holder ~= '' and lu > tonumber(ARGV[2]) then
  return {'busy', tostring(lu)}
end
redis.call('HSET', KEYS[1], ARGV[5], ARGV[1], until_field, ARGV[3])
redis.call('HDEL', KEYS[1], 'wd:' .. string.sub(ARGV[4], 3))
local all = redis.call('HGETALL', KEYS[1])
table.insert(all, 1, 'ok')
return all
