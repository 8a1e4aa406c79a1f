-- Create a run if it does not exist yet (the run id is derived, so this is the
-- idempotency point for duplicate events and redelivered router messages).
-- KEYS[1] run hash   ARGV: field, value, field, value, ...
-- KEYS[2] the metrics hash (optional): a created run counts as started, and one
-- created ended (a skipped cron tick or rate-limited run) as ended too.
-- Returns false when created, else {status, seq, started_at or '', created_at or ''}.
--#include _predicates
local st = redis.call('HGET', KEYS[1], 'st')
if st then
  local f = redis.call('HMGET', KEYS[1], 'seq', 't0', 'c')
  return {st, f[1] or '0', f[2] or '', f[3] or ''}
end
redis.call('HSET', KEYS[1], unpack(ARGV))
if KEYS[2] then
  local f = redis.call('HMGET', KEYS[1], 'app', 'fn', 'st')
  local lab = (f[1] or '') .. '|' .. (f[2] or '')
  redis.call('HINCRBY', KEYS[2], 'c|runs_started|' .. lab, 1)
  if ended(f[3]) then
    redis.call('HINCRBY', KEYS[2], 'c|runs_ended|' .. lab .. '|' .. f[3], 1)
  end
end
return false
