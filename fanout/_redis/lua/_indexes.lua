-- The run indexes, inlined by the store where a script has the line
-- `--#include _indexes` (after _predicates). KEYS[3] is the registry of functions
-- with runs (P:idx:fns) when the store indexes in its scripts (absent on a cluster:
-- then nothing below runs); the script does not write it (the store adds a function
-- as it creates its runs), its name gives the prefix every index key is named from,
-- with the run's function key, as fanout/_redis/keyspace.py names them
-- (docs/internals.md lists them). Every helper below does nothing without KEYS[3], so
-- on a cluster no key outside KEYS is touched (tests/scenarios/test_cluster.py checks
-- the other scripts' keys, and that every index write is in this file).
--   P:idx:st:<status>                                every run that ended, by status
--   P:idx:fn:<fk>|active, P:idx:fn:<fk>|st:<status> the same per function
--   P:idx:ver:<version>, P:idx:fn:<fk>|v:<version>   created on or ran on a version
--   P:idx:en:<name>, P:idx:fn:<fk>|en:<name>         started by an event of that name
--   P:idx:sa:<fk>|<path>|<value>                     a declared search attribute
--   P:idx:ended                                      the ended feed: run id -> ended (ms)
-- Each other one is a sorted set: run id -> created (ms). A run is in its function's active set
-- until it ends, then in the sets of its terminal status: five ZADDs when it is
-- created (the active set, its version's two, its event name's two), one ZREM and two
-- ZADDs when it ends (the cost budget in docs/internals.md), and one ZADD into the ended
-- feed (the history store's copier reads it); a search attribute costs one ZADD per run
-- that has it, each further event name of a batch two.
local IX = KEYS[3] and own(3)
local ix_base = IX and string.sub(IX, 1, -5) or nil
-- A piece of a key, as ids.key_part encodes it (percent-encoding all but the safe set).
local function ix_part(s)
  return (string.gsub(s, '[^%w%-%._~:/]', function(c)
    return string.format('%%%02X', string.byte(c))
  end))
end
local function ix_fn(fk)
  return ix_base .. ':fn:' .. ix_part(fk or '')
end
local function ix_ms(c)
  return string.format('%.0f', math.floor((tonumber(c or '') or 0) * 1000))
end
-- A search attribute's value as a key piece: numbers without a trailing .0, strings
-- as they are, booleans as true/false; nil for other values and for a text longer
-- than 64 bytes (not indexed).
local function ix_value(v)
  local t, s = type(v), nil
  if t == 'string' then s = v
  elseif t == 'number' then
    if v == math.floor(v) and math.abs(v) < 9007199254740992 then s = string.format('%.0f', v)
    else s = string.format('%.17g', v) end
  elseif t == 'boolean' then s = tostring(v)
  else return nil end
  if #s > 64 then return nil end
  return ix_part(s)
end
-- Index the declared search attributes (JSON list `sa`) under `root` ('data' of the
-- event JSON `raw`, or 'output' of the output JSON `raw`).
local function ix_search(fk, sa, root, raw, ms)
  if not IX or not sa or not raw then return end
  local ok, paths = pcall(cjson.decode, sa)
  if not ok or type(paths) ~= 'table' then return end
  local doc = nil
  for _, path in ipairs(paths) do
    if string.sub(path, 1, #root + 1) == root .. '.' then
      if doc == nil then
        local dok, d = pcall(cjson.decode, raw)
        if not dok then return end
        doc = d
        if root == 'data' then doc = type(d) == 'table' and d['data'] or nil end
      end
      local node = doc
      for part in string.gmatch(string.sub(path, #root + 2), '[^.]+') do
        if type(node) ~= 'table' then node = nil break end
        node = node[part]
      end
      local v = node ~= nil and ix_value(node) or nil
      if v then
        redis.call('ZADD', ix_base .. ':sa:' .. ix_part(fk or '') .. '|' .. ix_part(path)
                   .. '|' .. v, ms, KEYS[1]:match(':run:{(.*)}$'))
      end
    end
  end
end
-- The name of an event (its JSON `raw`): read off the start of the text when fanout
-- wrote it ({"name":"..." first, without escapes), else decoded; nil without one.
local function ix_event_name(raw)
  if not raw then return nil end
  local n = string.match(raw, '^{"name":"([^"\\]*)"[,}]')
  if n then return n end
  local ok, ev = pcall(cjson.decode, raw)
  if ok and type(ev) == 'table' and type(ev['name']) == 'string' then return ev['name'] end
  return nil
end
-- A run started by an event named `name`: the name's set of all functions and its own.
local function ix_name(fk, name, ms, rid)
  if not IX or not name or name == '' then return end
  redis.call('ZADD', ix_fn(fk) .. '|en:' .. ix_part(name), ms, rid)
  redis.call('ZADD', ix_base .. ':en:' .. ix_part(name), ms, rid)
end
-- The versions of a JSON list `vs` (the versions a run's passes ran on).
local function ix_versions(fk, vs, ms, rid)
  if not IX then return end
  local ok, list = pcall(cjson.decode, vs)
  if not ok or type(list) ~= 'table' then return end
  for _, v in ipairs(list) do
    if type(v) == 'string' and v ~= '' then
      redis.call('ZADD', ix_fn(fk) .. '|v:' .. ix_part(v), ms, rid)
      redis.call('ZADD', ix_base .. ':ver:' .. ix_part(v), ms, rid)
    end
  end
end
-- A run leaves its function's active set for the sets of its terminal status, and
-- enters the ended feed at `now` (epoch seconds, the time it ended).
local function ix_end(fk, status, ms, rid, now)
  if not IX then return end
  local fn = ix_fn(fk)
  redis.call('ZREM', fn .. '|active', rid)
  redis.call('ZADD', ix_base .. ':st:' .. status, ms, rid)
  redis.call('ZADD', fn .. '|st:' .. status, ms, rid)
  redis.call('ZADD', ix_base .. ':ended', ix_ms(now), rid)
end
-- A run just created (its fields in the table `a`): its function's active set (or,
-- created ended, its status's sets), its version's sets, its event name's sets (each
-- distinct name of its events when it is created with them), its event-data attributes.
local function ix_created(a, rid)
  if not IX then return end
  local ms, fn = ix_ms(a['c']), ix_fn(a['fk'])
  if ended(a['st']) then
    redis.call('ZADD', ix_base .. ':st:' .. a['st'], ms, rid)
    redis.call('ZADD', fn .. '|st:' .. a['st'], ms, rid)
    redis.call('ZADD', ix_base .. ':ended', ix_ms(a['t1'] or a['c']), rid)
  else
    redis.call('ZADD', fn .. '|active', ms, rid)
  end
  if a['v'] and a['v'] ~= '' then
    redis.call('ZADD', fn .. '|v:' .. ix_part(a['v']), ms, rid)
    redis.call('ZADD', ix_base .. ':ver:' .. ix_part(a['v']), ms, rid)
  end
  local first = ix_event_name(a['event'])
  ix_name(a['fk'], first, ms, rid)
  if a['events'] then
    local ok, evs = pcall(cjson.decode, a['events'])
    if ok and type(evs) == 'table' then
      local seen = {}
      if first then seen[first] = true end
      for _, e in ipairs(evs) do
        local n = type(e) == 'table' and e['name'] or nil
        if type(n) == 'string' and not seen[n] then
          seen[n] = true
          ix_name(a['fk'], n, ms, rid)
        end
      end
    end
  end
  if a['sa'] then ix_search(a['fk'], a['sa'], 'data', a['event'], ms) end
end
