-- Delete an owner hash (singleton, open debounce, open batch) if the run owns it.
-- KEYS[1] hash {run = owner}  ARGV[1] run id.  Returns 1 when deleted.
if redis.call('HGET', KEYS[1], 'run') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
