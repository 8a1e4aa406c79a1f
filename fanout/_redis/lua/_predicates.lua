-- Predicates several scripts share, inlined by the store where a script has the line
-- `--#include _predicates`.
-- KEYS[i] beyond the run hash (KEYS[1]): its key, or nil when absent, '' or KEYS[1]
-- itself (on a cluster a key left out is the run key, which is of the run's slot).
-- On a Redis Cluster KEYS[i] may be the run hash's name followed by the name of a key
-- in another slot on the run's node (the scripts carry the flag allow-cross-slot-keys
-- there; node_shards.py): that key is read once here, so a key its node no longer
-- serves (slots moved) stops the script before it writes anything.
local function own(i)
  local key = KEYS[i]
  if not key or key == '' or key == KEYS[1] then return nil end
  if #key > #KEYS[1] and string.sub(key, 1, #KEYS[1]) == KEYS[1] then
    key = string.sub(key, #KEYS[1] + 1)
    redis.call('EXISTS', key)
  end
  return key
end
-- The metrics hash (KEYS[2]; absent when counting is off); on a cluster a shard on
-- the run's node (metric_shards.py).
local MKEY = KEYS[2] and own(2)
-- The run's timer set (KEYS[4], given to the scripts that move the run's timer:
-- begin_pass, end_pass, go_on, finish_run); on a cluster a set on the run's node.
local TKEY = KEYS[4] and own(4)
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
