"""The Lua scripts of the write path: each applies one batch atomically in Redis.

A script gets every key it touches in KEYS (so Redis knows them) and the values in ARGV;
the layouts are spelled above each script and built by service/writes/batches.py.
"""

from __future__ import annotations

from core import contract
from core.hotness import MAX_EXPONENT

# Every script checks every event first and applies only if all pass (a Lua error
# mid-way would leave the events before it applied): a refused batch changes nothing.
# An applied marker holds the event's digest (service/writes/markers.py), so the same id sent with a different
# event is refused instead of being counted as a duplicate ('1' is a marker written
# before digests, taken as matching).
_MARKERS_LUA = """
local function marker(akey, digest, i, batch_ids)
  local seen = batch_ids[akey]
  if seen ~= nil then
    if seen ~= digest then return 'conflict' end
    return 'dup'
  end
  batch_ids[akey] = digest
  local cur = redis.call('GET', akey)
  if not cur then return 'new' end
  if cur ~= digest and cur ~= '1' then return 'conflict' end
  return 'dup'
end
"""

# A community's recent list: newest first, at most `keep` ids (contract.encode_recent).
# One definition, also run on its own as a one-key script by the cluster writer
# (service/writes/cluster.py) when the list lives in another slot than the post.
PREPEND_RECENT_LUA = """
local function prepend_recent(rkey, pid, keep)
  local ids, count = {pid}, 1
  for id in string.gmatch(redis.call('GET', rkey) or '', '[^\\n]+') do
    if count >= keep then break end
    if id ~= pid then ids[#ids + 1] = id; count = count + 1 end
  end
  redis.call('SET', rkey, table.concat(ids, '\\n'))
end
"""

# KEYS: live stream, event log, the experiment candidate's live stream, then (applied,
#       post, community recent list, candidate's post, candidate's recent list) per event.
# ARGV: ttl, flags offset, log maxlen, recent list length, then 12 per event:
#       op, post id, record (create), community id, author id, vector (create), created_at,
#       log payload, digest, candidate op ('' = no experiment candidate to keep in step),
#       candidate record (create), candidate vector (create).
# op: "create" | "flags:<set>:<clear>" | "delete"
# While an experiment runs, every post event is applied to the candidate version too, in
# the same script: a deletion or a post made members-only can never stay visible there.
# Returns {applied, dups} or {'err', event index (0-based), 'conflict'}.
POSTS_LUA = (
    _MARKERS_LUA
    + PREPEND_RECENT_LUA
    + """
local ttl, off, maxlen, keep = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local applied, dups = 0, 0
local n = (#KEYS - 3) / 5
local status, batch_ids = {}, {}
for i = 0, n - 1 do
  local m = marker(KEYS[4 + 5 * i], ARGV[5 + 12 * i + 8], i, batch_ids)
  if m == 'conflict' then return {'err', i, 'conflict'} end
  status[i] = m
end
local function apply(live, pkey, rkey, op, pid, record, community, author, vector, created)
  if op == 'create' then
    redis.call('SET', pkey, record)
    redis.call('XADD', live, '*', 'p', pid, 'c', community, 'a', author, 'v', vector, 't', created)
    prepend_recent(rkey, pid, keep)
  else
    local cur = redis.call('GETRANGE', pkey, off, off)
    if cur ~= '' then
      local f = string.byte(cur)
      if op == 'delete' then
        f = bit.bor(f, 2)
        redis.call('XADD', live, '*', 'p', pid, 'd', '1')
      else
        local set, clear = string.match(op, 'flags:(%d+):(%d+)')
        f = bit.bor(bit.band(f, bit.bnot(tonumber(clear))), tonumber(set))
        redis.call('XADD', live, '*', 'p', pid, 'x', (tonumber(set) > 0) and '1' or '0')
      end
      redis.call('SETRANGE', pkey, off, string.char(f))
    end
  end
end
for i = 0, n - 1 do
  local k = 4 + 5 * i
  local a = 5 + 12 * i
  local pid = ARGV[a + 1]
  if status[i] == 'new' then
    redis.call('SET', KEYS[k], ARGV[a + 8], 'EX', ttl)
    applied = applied + 1
    apply(KEYS[1], KEYS[k + 1], KEYS[k + 2], ARGV[a], pid, ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6])
    if ARGV[a + 9] ~= '' then
      apply(KEYS[3], KEYS[k + 3], KEYS[k + 4], ARGV[a + 9], pid, ARGV[a + 10], ARGV[a + 3], ARGV[a + 4], ARGV[a + 11], ARGV[a + 6])
    end
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', '@LOG_POST@', ARGV[a + 7])
  else
    dups = dups + 1
  end
end
return {applied, dups}
""".replace("@LOG_POST@", contract.LOG_POST)
)

# KEYS: event log, experiment log, then (applied, post, stats, user's seen set, community
#       hot list, the experiment candidate's post, its hot list, its stats) per event.
# ARGV: ttl, positives offset, negatives offset, views offset, dim, log maxlen, seen kept,
#       hot offset (hot f4 then hot_at f8), half-life s, hot-list epoch, hot-list length,
#       experiment log maxlen, the candidate's hot-list epoch ('' = no experiment candidate
#       to keep in step; else its counters, hotness and engager statistics move as the
#       serving version's do), the candidate's dim, then 10 per event: positives add,
#       negatives add, views add, stats delta ('' = none), post id, timestamp, payload,
#       digest, attribution (the experiment log entry when an experiment served this post
#       to this user, else ''; written only for a new event, so a retry is attributed
#       once), the candidate's stats delta (its own user factors).
# Hotness follows core/hotness.py (`add` for the record, `list_score` for the hot list).
# Returns {applied, dups, post key, stats, post key, stats, ...} for moved posts (the
# candidate's under its own post keys), or
# {'err', event index (0-based), 'conflict'}.
ENGAGEMENTS_LUA = (
    _MARKERS_LUA
    + """
local ttl = ARGV[1]
local offs = {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])}
local dim, maxlen, seen_keep = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local hot_off, half_life, epoch, hot_keep = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local exp_maxlen, mirror_epoch, mirror_dim = ARGV[12], tonumber(ARGV[13]), tonumber(ARGV[14])
local applied, dups = 0, 0
local moved = {}
local n = (#KEYS - 2) / 8
local status, batch_ids = {}, {}
for i = 0, n - 1 do
  local m = marker(KEYS[3 + 8 * i], ARGV[15 + 10 * i + 7], i, batch_ids)
  if m == 'conflict' then return {'err', i, 'conflict'} end
  status[i] = m
end
-- counters and hotness of one version's post record and hot list
local function bump(pkey, hkey, epoch, a)
    for j = 1, 3 do
      local add = tonumber(ARGV[a + j - 1])
      if add ~= 0 then
        local cur = redis.call('GETRANGE', pkey, offs[j], offs[j] + 3)
        if #cur == 4 then
          redis.call('SETRANGE', pkey, offs[j], struct.pack('<f', struct.unpack('<f', cur) + add))
        end
      end
    end
    local gain, ts = tonumber(ARGV[a]), tonumber(ARGV[a + 5])
    if gain > 0 then
      local cur = redis.call('GETRANGE', pkey, hot_off, hot_off + 11)
      if #cur == 12 then
        local h, at = struct.unpack('<fd', cur)
        if ts >= at then
          h, at = h * 2 ^ (-(ts - at) / half_life) + gain, ts
        else
          h = h + gain * 2 ^ (-(at - ts) / half_life)
        end
        redis.call('SETRANGE', pkey, hot_off, struct.pack('<fd', h, at))
        local e = math.min((ts - epoch) / half_life, @MAX_EXPONENT@)
        redis.call('ZINCRBY', hkey, gain * 2 ^ e, ARGV[a + 4])
        redis.call('ZREMRANGEBYRANK', hkey, 0, -(hot_keep + 1))
      end
    end
end
-- a post's engager statistics (d + 1 floats) plus one engagement's
local function accumulate(skey, pkey, delta, d)
  local fmt = '<' .. string.rep('f', d + 1)
  local cur = redis.call('GET', skey)
  if cur then
    local x = {struct.unpack(fmt, cur)}
    local y = {struct.unpack(fmt, delta)}
    local out = {}
    for j = 1, d + 1 do out[j] = x[j] + y[j] end
    delta = struct.pack(fmt, unpack(out))
  end
  redis.call('SET', skey, delta)
  moved[pkey] = delta
end
for i = 0, n - 1 do
  local k = 3 + 8 * i
  local akey, pkey, skey, seen, hkey = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local a = 15 + 10 * i
  if status[i] == 'new' then
    redis.call('SET', akey, ARGV[a + 7], 'EX', ttl)
    applied = applied + 1
    bump(pkey, hkey, epoch, a)
    if ARGV[a + 3] ~= '' then accumulate(skey, pkey, ARGV[a + 3], dim) end
    if mirror_epoch then
      bump(KEYS[k + 5], KEYS[k + 6], mirror_epoch, a)
      if ARGV[a + 9] ~= '' then accumulate(KEYS[k + 7], KEYS[k + 5], ARGV[a + 9], mirror_dim) end
    end
    -- any engagement means the user has seen the post: the seen filter drops it next time
    redis.call('ZADD', seen, ARGV[a + 5], ARGV[a + 4])
    redis.call('ZREMRANGEBYRANK', seen, 0, -(seen_keep + 1))
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', '@LOG_ENGAGEMENT@', ARGV[a + 6])
    if ARGV[a + 8] ~= '' then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', exp_maxlen, '*', '@LOG_ATTRIBUTED@', ARGV[a + 8])
    end
  else
    dups = dups + 1
  end
end
local out = {applied, dups}
for k, v in pairs(moved) do out[#out + 1] = k; out[#out + 1] = v end
return out
""".replace("@LOG_ENGAGEMENT@", contract.LOG_ENGAGEMENT)
    .replace("@LOG_ATTRIBUTED@", contract.LOG_ATTRIBUTED)
    .replace("@MAX_EXPONENT@", repr(MAX_EXPONENT))
)

# KEYS: event log, then (applied, user's graph hash, user's block set) per event.
# ARGV: ttl, log maxlen, data end, applied-at, block list max, then 8 per event:
#       op, community id (CREATE_USER: ids joined by newline), role code, bundle state
#       (SET_ROLE: the user's role in the bundle; CREATE_USER: 1 if the model knows the
#       user), target user, digest, graph field prefix of communities, log payload.
# Returns {applied, dups} or {'err', event index (0-based), reason}.
GRAPH_LUA = (
    (
        _MARKERS_LUA
        + """
local ttl, maxlen, data_end, at, block_max = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local n = (#KEYS - 1) / 3
local pending = {}  -- gkey .. '\\0' .. field -> value this batch will have written
local function get(gkey, field)
  local v = pending[gkey .. '\\0' .. field]
  if v ~= nil then return v end
  return redis.call('HGET', gkey, field)
end
local function state(gkey, field, bundle_role)
  local v = get(gkey, field)
  if v and v ~= false then
    local s, t = string.match(v, '(%d+):(%d+)')
    if tonumber(t) > data_end or tonumber(s) == @BANNED@ then return tonumber(s) end
  end
  return bundle_role
end
local status, batch_ids = {}, {}
local blocks = {}
for i = 0, n - 1 do
  local akey, gkey, bkey = KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i]
  local a = 6 + 8 * i
  local op, comm, role, bundle_state, target, prefix = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3]), ARGV[a + 4], ARGV[a + 6]
  local m = marker(akey, ARGV[a + 5], i, batch_ids)
  if m == 'conflict' then return {'err', i, 'conflict'} end
  status[i] = m
  if m == 'new' then
    local field = prefix .. comm
    if op == 'join' or op == 'set_role' then
      local s = state(gkey, field, bundle_state)
      if s == @BANNED@ then return {'err', i, 'banned'} end
      if op == 'set_role' and (s < 1 or s > 3) then return {'err', i, 'not_member'} end
      pending[gkey .. '\\0' .. field] = role .. ':' .. at
    elseif op == 'leave' then
      if state(gkey, field, 0) ~= @BANNED@ then pending[gkey .. '\\0' .. field] = '0:' .. at end
    elseif op == 'ban' then
      pending[gkey .. '\\0' .. field] = '@BANNED@:' .. at
    elseif op == 'unban' then
      if state(gkey, field, 0) == @BANNED@ then pending[gkey .. '\\0' .. field] = '0:' .. at end
    elseif op == 'create' then
      if bundle_state == 1 or get(gkey, 'created') then return {'err', i, 'exists'} end
      pending[gkey .. '\\0created'] = at
      for c in string.gmatch(comm, '[^\\n]+') do
        pending[gkey .. '\\0' .. prefix .. c] = '1:' .. at
      end
    elseif op == 'block' then
      local count = blocks[bkey] or redis.call('SCARD', bkey)
      if redis.call('SISMEMBER', bkey, target) == 0 then
        if count >= block_max then return {'err', i, 'full'} end
        blocks[bkey] = count + 1
      end
    end
  end
end
local applied, dups = 0, 0
for i = 0, n - 1 do
  local akey, gkey, bkey = KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i]
  local a = 6 + 8 * i
  local op, comm, target = ARGV[a], ARGV[a + 1], ARGV[a + 4]
  if status[i] == 'new' then
    applied = applied + 1
    redis.call('SET', akey, ARGV[a + 5], 'EX', ttl)
    if op == 'block' then
      redis.call('SADD', bkey, target)
    elseif op == 'unblock' then
      redis.call('SREM', bkey, target)
    elseif op == 'mute' then
      redis.call('HSET', gkey, '@MUTED@' .. comm, at)
    elseif op == 'unmute' then
      redis.call('HDEL', gkey, '@MUTED@' .. comm)
    end
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', '@LOG_GRAPH@', ARGV[a + 7])
  else
    dups = dups + 1
  end
end
-- membership changes, in event order (the last event on a field wins)
for key, value in pairs(pending) do
  local gkey, field = string.match(key, '^(.-)%z(.*)$')
  redis.call('HSET', gkey, field, value)
end
return {applied, dups}
"""
    )
    .replace("@BANNED@", str(contract.GRAPH_BANNED))
    .replace("@MUTED@", contract.GRAPH_MUTED)
    .replace("@LOG_GRAPH@", contract.LOG_GRAPH)
)

# KEYS: event log, live stream of the serving version, removed hash, caps hash, pins,
#       rules counter, then (applied, moderator's graph hash, post record) per event.
# ARGV: ttl, log maxlen, data end, applied-at, flags offset, then 9 per event: op,
#       community id, post id, until, max share, the moderator's role in the bundle,
#       digest, log payload, pin member (contract.encode_pin).
# Returns {applied, dups} or {'err', event index (0-based), reason}.
RULES_LUA = (
    (
        _MARKERS_LUA
        + """
local ttl, maxlen, data_end, at, off = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local n = (#KEYS - 6) / 3
local status, batch_ids = {}, {}
for i = 0, n - 1 do
  local akey, gkey = KEYS[7 + 3 * i], KEYS[8 + 3 * i]
  local a = 6 + 9 * i
  local m = marker(akey, ARGV[a + 6], i, batch_ids)
  if m == 'conflict' then return {'err', i, 'conflict'} end
  status[i] = m
  if m == 'new' then
    -- the moderator's live role wins over the bundle's when it is newer (core/live_graph.py)
    local role = tonumber(ARGV[a + 5])
    local v = redis.call('HGET', gkey, '@COMMUNITY@' .. ARGV[a + 1])
    if v then
      local s, t = string.match(v, '(%d+):(%d+)')
      if tonumber(t) > data_end or tonumber(s) == @BANNED@ then role = tonumber(s) end
    end
    if role ~= @MODERATOR@ then return {'err', i, 'denied'} end
  end
end
local applied, dups, rules_changed = 0, 0, false
for i = 0, n - 1 do
  local akey, pkey = KEYS[7 + 3 * i], KEYS[9 + 3 * i]
  local a = 6 + 9 * i
  local op, comm, pid = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  if status[i] == 'new' then
    applied = applied + 1
    redis.call('SET', akey, ARGV[a + 6], 'EX', ttl)
    if op == 'pin' then
      redis.call('ZADD', KEYS[5], ARGV[a + 3], ARGV[a + 8])
      redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. at)
      rules_changed = true
    elseif op == 'unpin' then
      redis.call('ZREM', KEYS[5], ARGV[a + 8])
      rules_changed = true
    elseif op == 'remove' or op == 'restore' then
      local cur = redis.call('GETRANGE', pkey, off, off)
      if cur ~= '' then
        local f = string.byte(cur)
        if op == 'remove' then f = bit.bor(f, @REMOVED@) else f = bit.band(f, bit.bnot(@REMOVED@)) end
        redis.call('SETRANGE', pkey, off, string.char(f))
      end
      if op == 'remove' then
        redis.call('HSET', KEYS[3], pid, ARGV[a + 7])
      else
        redis.call('HDEL', KEYS[3], pid)
      end
      redis.call('XADD', KEYS[2], '*', 'p', pid, 'r', (op == 'remove') and '1' or '0')
    elseif op == 'cap' then
      if tonumber(ARGV[a + 4]) >= 1 then
        redis.call('HDEL', KEYS[4], comm)
      else
        redis.call('HSET', KEYS[4], comm, ARGV[a + 4])
      end
      rules_changed = true
    end
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', '@LOG_RULE@', ARGV[a + 7])
  else
    dups = dups + 1
  end
end
if rules_changed then redis.call('INCR', KEYS[6]) end
return {applied, dups}
"""
    )
    .replace("@BANNED@", str(contract.GRAPH_BANNED))
    .replace("@COMMUNITY@", contract.GRAPH_COMMUNITY)
    .replace("@REMOVED@", str(contract.FLAG_REMOVED))
    .replace("@MODERATOR@", str(contract.ROLE_MODERATOR))
    .replace("@LOG_RULE@", contract.LOG_RULE)
)
