-- Create a run if it does not exist yet (the run id is derived, so this is the
-- idempotency point for duplicate events and redelivered router messages).
-- KEYS[1] run hash   ARGV: field, value, field, value, ...
-- KEYS[2] the metrics hash (optional; '' when off and KEYS[3] is given): a created run
-- counts as started, and one created ended (a skipped cron tick or rate-limited run)
-- as ended too.
-- KEYS[3] the registry of functions with runs (optional, see _indexes): the run goes
-- into its function's active set (or, created ended, its status's sets), its
-- version's sets and the sets of its declared search attributes over the event's data.
-- Returns false when created, else {status, seq, started_at or '', created_at or ''}.
--#include _predicates
--#include _indexes
local st = redis.call('HGET', KEYS[1], 'st')
if st then
  local f = redis.call('HMGET', KEYS[1], 'seq', 't0', 'c')
  return {st, f[1] or '0', f[2] or '', f[3] or ''}
end
redis.call('HSET', KEYS[1], unpack(ARGV))
if IX then
  local a = {}
  for i = 1, #ARGV - 1, 2 do a[ARGV[i]] = ARGV[i + 1] end
  ix_created(a, KEYS[1]:match(':run:{(.*)}$'))
end
if MKEY then
  local f = redis.call('HMGET', KEYS[1], 'app', 'fn', 'st')
  local lab = (f[1] or '') .. '|' .. (f[2] or '')
  redis.call('HINCRBY', MKEY, 'c|runs_started|' .. lab, 1)
  if ended(f[3]) then
    redis.call('HINCRBY', MKEY, 'c|runs_ended|' .. lab .. '|' .. f[3], 1)
  end
end
return false
