-- Add an event to a batch run that has not started yet.
-- KEYS[1] run hash
-- KEYS[2] '' and KEYS[3] the registry of functions with runs (both absent on a cluster,
-- see _indexes): the run goes into the sets of the event's name as well
-- ARGV[1] field ('be:<event id>')  ARGV[2] {"n": position, "e": event} JSON
-- ARGV[3] '1' when the batch is now full: the run may start at once (not before
-- its throttle time 'nb'; not after its start deadline 'dls')
-- ARGV[4] the event's name
-- Returns {1, wake (s) or ''} when added, {0, ''} when the run has started or
-- ended (the caller opens a new batch).
--#include _predicates
--#include _indexes
if redis.call('HGET', KEYS[1], 'st') ~= 'queued' or redis.call('HGET', KEYS[1], 't0') then
  return {0, ''}
end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 and IX then
  local f = redis.call('HMGET', KEYS[1], 'fk', 'c')
  ix_name(f[1], ARGV[4], ix_ms(f[2]), KEYS[1]:match(':run:{(.*)}$'))
end
if ARGV[3] ~= '1' then return {1, ''} end
local wake = tonumber(redis.call('HGET', KEYS[1], 'nb') or '0')
local dls = redis.call('HGET', KEYS[1], 'dls')
if dls and wake > tonumber(dls) then wake = tonumber(dls) end
local s = string.format('%.3f', wake)
redis.call('HSET', KEYS[1], 'wake', s)
return {1, s}
