-- Park a pass of a paused function.  The pause flag is the truth: when it is set, the
-- pass is added to the function's parked set (once) and the caller drops the message;
-- when it is not, nothing changes and the caller runs the pass.
-- KEYS[1] the function's pause flag   KEYS[2] the function's parked set
-- ARGV[1] member (JSON [run id, seq])  ARGV[2] score (ms; oldest first on resume)
-- Returns 1 when parked, 0 when the function is not paused.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
return 1
