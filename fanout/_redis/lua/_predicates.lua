-- Predicates several scripts share, inlined by the store where a script has the line
-- `--#include _predicates`.
-- The metrics hash (KEYS[2]; the empty string or absent when counting is off). On a
-- Redis Cluster KEYS[2] is the run hash's name followed by the name of a metrics shard
-- on the run's node: declared in the run's slot, and the shard is what is written
-- (the scripts carry the flag allow-cross-slot-keys there; metric_shards.py).
local MKEY = KEYS[2] ~= '' and KEYS[2] or nil
if MKEY and #MKEY > #KEYS[1] and string.sub(MKEY, 1, #KEYS[1]) == KEYS[1] then
  MKEY = string.sub(MKEY, #KEYS[1] + 1)
end
-- A run status that no transition leaves.
local function ended(st)
  return st == 'completed' or st == 'failed' or st == 'cancelled' or st == 'skipped'
end
-- A step status that is final: the first final record of a step wins.
local function final_status(st)
  return st == 'completed' or st == 'failed'
end
-- A step record (JSON, or nil when there is none) that is final.
local function final(raw)
  if not raw then return false end
  return final_status(cjson.decode(raw)['st'])
end
-- The run hash (KEYS[1]) read whole, for a script that begins a pass: its flat reply,
-- where each field's value is in it, and a getter (false for a field it lacks).
local function read_whole()
  local all = redis.call('HGETALL', KEYS[1])
  local at = {}
  for i = 1, #all, 2 do at[all[i]] = i + 1 end
  return all, at, function(name) local i = at[name]; return i and all[i] or false end
end
-- Write the pairs of set (field, value, ...) to the run hash and patch its read (all,
-- at) to what the hash now holds: the state a pass begins with, as the reply.
local function write_whole(all, at, set)
  redis.call('HSET', KEYS[1], unpack(set))
  for i = 1, #set, 2 do
    local j = at[set[i]]
    if j then
      all[j] = set[i + 1]
    else
      all[#all + 1], all[#all + 2] = set[i], set[i + 1]
      at[set[i]] = #all
    end
  end
end
