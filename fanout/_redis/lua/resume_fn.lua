-- Resume a paused function: clear its pause flag and hand back every parked pass,
-- oldest first, emptying the parked set in the same step (nothing parked after the
-- flag is cleared, nothing handed back twice).
-- KEYS[1] the function's pause flag   KEYS[2] the function's parked set
-- Returns the parked members (JSON [run id, seq]), oldest first.
redis.call('DEL', KEYS[1])
local parked = redis.call('ZRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
return parked
