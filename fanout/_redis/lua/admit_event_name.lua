-- Admit an event name to a metrics series of its own, up to a cap, so names that
-- nobody bounds (a typo, an attacker's ingest) cannot grow the metrics without limit.
-- KEYS[1]: the set of admitted names.
-- ARGV[1]: the name; ARGV[2]: the cap (how many names may have their own series).
-- Returns 1 when the name has (or now gets) its own series, 0 when it counts as "other".
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  return 1
end
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('SADD', KEYS[1], ARGV[1])
  return 1
end
return 0
