-- Applies one batch of events and labels to the interaction state, atomically.
-- It is the Redis twin of features.memory_store.MemoryStore; the arithmetic is the one of
-- features.interactions (observe, observe_label) and the tests check that both agree.
--
-- ARGV[1] key prefix
-- ARGV[2] operations, JSON array, in record order:
--           ["E", event_id, source, partition, offset, timestamp_ms, [entity keys], payload, label|null, weight]
--           ["L", event_id, source, label, weight, timestamp_ms, held]
--           held: the caller holds the event's features, so a learned label's reply
--           leaves out the payload, states and score
-- ARGV[3] scores of earlier events to store in their snapshots, JSON object {event_id: "score"}
-- ARGV[4] parameters, JSON object: half_lives_ms, snapshot_ttl_ms, state_ttl_ms (0: entities
--           never expire), pending_max, pending_ttl_ms, max_wait_ms, implicit_ms (0: off),
--           sweep_max, watermarks: an array of [partition, event time] for the partitions
--           this worker owns, and clock: the worker's event time over all of them (-1: none
--           yet). Labels wait,
--           and events wait for implicit labels, in one sorted set per partition, and
--           only the owner of a partition expires them, by that partition's event time
--           (events and labels are keyed by event id, so they share partition numbers).
--           Every waiting label is also in one sorted set of them all: past pending_max
--           the oldest leaves as soon as a label is added, and a label leaves once any
--           worker's clock passes its time by max_wait_ms (a label partition with no
--           events partition of its number has no owner to expire it otherwise).
--
-- An entity is a hash: ``v``, its state as little-endian doubles (count, positives,
-- labelled, last_ms, decay_ref_ms, then one decayed count per half-life: exact, and
-- no decimal formatting), and per partition ``w<partition>``, the offset of the last
-- event of that partition applied to it (its replays are recognised by it). Every update
-- of an entity sets its TTL again (state_ttl_ms), so only active entities stay.
--
-- Keys written: entities (TTL state_ttl_ms), snapshots ``s:<event id>`` (TTL
-- snapshot_ttl_ms, set when written; later fields keep it), and per partition the
-- bounded pending-label set (``pl``, ``plz:<partition>``) and implicit-label deadlines
-- (``dl:<partition>``).
--
-- Returns one reply per operation, then the swept records:
--   E: {"new"|"replay"|"duplicate", states, label}   label: "" or "value|weight|source|timestamp|at"
--      states: the entities' ``v`` before the event, concatenated (a new one's: ``empty_state``)
--   L: {"learn"|"relearn"|"pending"|"duplicate"|"late"|"noop", payload, states, score}
--   then {"X", event_id, label, cause} per pending label that left without its event (cause:
--   "overflow" as labels were added, then "ttl" per partition, then "max_wait"), and
--   {"I", event_id, payload, states, score} per implicit negative label.

local prefix = ARGV[1]
local ops = cjson.decode(ARGV[2])
local scores = cjson.decode(ARGV[3])
local params = cjson.decode(ARGV[4])
local half_lives = params.half_lives_ms
local width = 5 + #half_lives
local state_format = '<' .. string.rep('d', width)
local empty = {0, 0, 0, -1, 0}
for k = 1, #half_lives do empty[5 + k] = 0 end
local empty_state = struct.pack(state_format, unpack(empty))
local pending_hash = prefix .. ':pl'
local state_ttl = params.state_ttl_ms or 0

-- An entity was updated: its state lives state_ttl more.
local function keep_alive(key)
  if state_ttl > 0 then redis.call('PEXPIRE', key, state_ttl) end
end
local pending_all = prefix .. ':plz:all'

local function partition_of(source) return string.match(source, ':(%d+):%d+$') end

local function pending_zset(partition) return prefix .. ':plz:' .. partition end

local function deadlines(partition) return prefix .. ':dl:' .. partition end

local function fmt(x) return string.format('%.17g', x) end

local function int(x) return string.format('%d', x) end

local function snapshot_key(event_id) return prefix .. ':s:' .. event_id end

local function unpacked(v)
  if not v then return {unpack(empty)} end
  return {struct.unpack(state_format, v)}  -- (struct.unpack also returns the next position)
end

local function pack(state) return struct.pack(state_format, unpack(state, 1, width)) end

local function observe(key, v, applied, mark, offset, ts)
  if offset <= applied then return end
  local s = unpacked(v)
  s[1] = s[1] + 1
  if ts > s[4] then s[4] = ts end
  local r = s[5]
  if ts >= r then
    for k = 1, #half_lives do s[5 + k] = s[5 + k] * 2 ^ (-(ts - r) / half_lives[k]) + 1.0 end
    s[5] = ts
  else
    for k = 1, #half_lives do s[5 + k] = s[5 + k] + 2 ^ (-(r - ts) / half_lives[k]) end
  end
  redis.call('HSET', key, 'v', pack(s), mark, int(offset))
  keep_alive(key)
end

-- A label's value added to the positives and one to the labelled count of each entity;
-- ``positives`` alone for a label that comes after its implicit negative.
local function observe_label(keys, value, labelled)
  for _, key in ipairs(keys) do
    local s = unpacked(redis.call('HGET', key, 'v'))
    s[2] = s[2] + value
    s[3] = s[3] + labelled
    redis.call('HSET', key, 'v', pack(s))
    keep_alive(key)
  end
end

local function apply_label(snap, keys, value, weight, source, ts, at)
  observe_label(cjson.decode(keys), value, 1.0)
  redis.call('HSET', snap, 'lab', source, 'ly', fmt(value), 'lw', fmt(weight), 'lt', int(ts), 'lat', at)
  return fmt(value) .. '|' .. fmt(weight) .. '|' .. source .. '|' .. int(ts) .. '|' .. at
end

local function stored_label(snap)
  local v = redis.call('HMGET', snap, 'lab', 'ly', 'lw', 'lt', 'lat')
  if not v[1] or v[5] ~= 'event' then return '' end
  return v[2] .. '|' .. v[3] .. '|' .. v[1] .. '|' .. v[4] .. '|' .. v[5]
end

-- The reply to a label the caller learns: the event's payload, states and score,
-- unless the caller holds them.
local function labelled(status, snap, held)
  if held then return {status, '', '', ''} end
  local e = redis.call('HMGET', snap, 'ev', 'st', 'sc')
  return {status, e[1], e[2], e[3] or ''}
end

local function pending_expire(event_id, source)
  redis.call('HDEL', pending_hash, event_id)
  redis.call('ZREM', pending_zset(partition_of(source)), event_id)
  redis.call('ZREM', pending_all, event_id)
end

local function pending_source(waiting) return string.match(waiting, '^[^|]*|[^|]*|(.*)|[^|]*$') end

-- Labels that leave the pending set without their event, replied after the operations.
local evicted = {}
local function evict(event_id, cause)
  local waiting = redis.call('HGET', pending_hash, event_id) or ''
  evicted[#evicted + 1] = {'X', event_id, waiting, cause}
  redis.call('HDEL', pending_hash, event_id)
  redis.call('ZREM', pending_all, event_id)
  if waiting ~= '' then redis.call('ZREM', pending_zset(partition_of(pending_source(waiting))), event_id) end
end

-- Labels left waiting by a version that kept no set of them all join it once.
if redis.call('EXISTS', pending_all) == 0 and redis.call('HLEN', pending_hash) > 0 then
  local waiting = redis.call('HGETALL', pending_hash)
  for i = 1, #waiting, 2 do
    redis.call('ZADD', pending_all, string.match(waiting[i + 1], '|([^|]*)$'), waiting[i])
  end
end

for event_id, score in pairs(scores) do
  local snap = snapshot_key(event_id)
  if redis.call('EXISTS', snap) == 1 then redis.call('HSET', snap, 'sc', score) end
end

local replies = {}
for _, op in ipairs(ops) do
  if op[1] == 'E' then
    local event_id, source, partition, offset, ts = op[2], op[3], op[4], op[5], op[6]
    local keys, payload, label, weight = op[7], op[8], op[9], op[10]
    local snap = snapshot_key(event_id)
    local existing = redis.call('HMGET', snap, 'src', 'st')
    if existing[1] then
      if existing[1] == source then
        replies[#replies + 1] = {'replay', existing[2], stored_label(snap)}
      else
        replies[#replies + 1] = {'duplicate', '', ''}
      end
    else
      local states = {}
      local mark = 'w' .. partition
      for i, key in ipairs(keys) do
        local stored = redis.call('HMGET', key, 'v', mark)
        states[i] = stored[1] or empty_state
        observe(key, stored[1], tonumber(stored[2] or '-1'), mark, offset, ts)
      end
      local st = table.concat(states)
      local keys_json = cjson.encode(keys)
      redis.call('HSET', snap, 'src', source, 'ev', payload, 'st', st, 'k', keys_json)
      redis.call('PEXPIRE', snap, params.snapshot_ttl_ms)
      local applied = ''
      if label ~= cjson.null then
        applied = apply_label(snap, keys_json, label, weight, source, ts, 'event')
      else
        local waiting = redis.call('HGET', pending_hash, event_id)
        if waiting then
          local value, w, lsrc, lts = string.match(waiting, '^([^|]*)|([^|]*)|(.*)|([^|]*)$')
          applied = apply_label(snap, keys_json, tonumber(value), tonumber(w), lsrc, tonumber(lts), 'event')
          pending_expire(event_id, lsrc)
        elseif params.implicit_ms > 0 then
          redis.call('ZADD', deadlines(partition), ts + params.implicit_ms, event_id)
        end
      end
      replies[#replies + 1] = {'new', st, applied}
    end
  else
    local event_id, source, value, weight, ts, held = op[2], op[3], op[4], op[5], op[6], op[7]
    local snap = snapshot_key(event_id)
    local s = redis.call('HMGET', snap, 'src', 'lab', 'lat', 'k')
    if not s[1] then
      local waiting = redis.call('HGET', pending_hash, event_id)
      if waiting and pending_source(waiting) ~= source then
        replies[#replies + 1] = {'duplicate', '', '', ''}
      else
        redis.call('HSET', pending_hash, event_id, fmt(value) .. '|' .. fmt(weight) .. '|' .. source .. '|' .. int(ts))
        redis.call('ZADD', pending_zset(partition_of(source)), ts, event_id)
        redis.call('ZADD', pending_all, ts, event_id)
        while redis.call('ZCARD', pending_all) > params.pending_max do
          evict(redis.call('ZRANGE', pending_all, 0, 0)[1], 'overflow')
        end
        replies[#replies + 1] = {'pending', '', '', ''}
      end
    elseif s[2] == source then
      if s[3] == 'event' then
        replies[#replies + 1] = labelled('noop', snap, held)
      else
        replies[#replies + 1] = labelled('relearn', snap, held)
      end
    elseif s[2] == 'implicit' then
      if value > 0 then observe_label(cjson.decode(s[4]), value, 0.0) end
      redis.call('HSET', snap, 'lab', 'late:' .. source)
      replies[#replies + 1] = {'late', '', '', ''}
    elseif s[2] then
      replies[#replies + 1] = {'duplicate', '', '', ''}
    else
      apply_label(snap, s[4], value, weight, source, ts, 'label')
      replies[#replies + 1] = labelled('learn', snap, held)
    end
  end
end

for _, mark in ipairs(params.watermarks) do
  local partition, watermark = mark[1], mark[2]
  local stale = redis.call('ZRANGEBYSCORE', pending_zset(partition), '-inf', watermark - params.pending_ttl_ms)
  for _, event_id in ipairs(stale) do
    evict(event_id, 'ttl')
    redis.call('ZREM', pending_zset(partition), event_id)
  end
end
if params.clock >= 0 then
  local stale = redis.call('ZRANGEBYSCORE', pending_all, '-inf', params.clock - params.max_wait_ms)
  for _, event_id in ipairs(stale) do evict(event_id, 'max_wait') end
end
for _, reply in ipairs(evicted) do replies[#replies + 1] = reply end

if params.implicit_ms > 0 then
  for _, mark in ipairs(params.watermarks) do
    local partition, watermark = mark[1], mark[2]
    local due = redis.call('ZRANGEBYSCORE', deadlines(partition), '-inf', watermark, 'LIMIT', 0, params.sweep_max)
    for _, event_id in ipairs(due) do
      redis.call('ZREM', deadlines(partition), event_id)
      local snap = snapshot_key(event_id)
      local s = redis.call('HMGET', snap, 'src', 'ev', 'st', 'sc', 'lab', 'k')
      if s[1] and not s[5] then
        apply_label(snap, s[6], 0.0, 1.0, 'implicit', watermark, 'implicit')
        replies[#replies + 1] = {'I', event_id, s[2], s[3], s[4] or ''}
      end
    end
  end
end

return replies
