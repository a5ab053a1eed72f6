"""The Lua scripts of the write path: each applies one batch atomically in Redis.

A script gets every key it touches in KEYS (so Redis knows them) and the values in ARGV;
the layouts are spelled above each script and built by service/writes/batches.py.
"""

from __future__ import annotations

from core import contract
from core.hotness import MAX_EXPONENT

# KEYS: live stream, event log, then (applied, post, community recent list) per event.
# ARGV: ttl, flags offset, log maxlen, recent list length, then 8 per event:
#       op, post id, record (create), community id, author id, vector (create), created_at, log payload.
# op: "create" | "flags:<set>:<clear>" | "delete"
POSTS_LUA = """
local ttl, off, maxlen, keep = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local applied, dups = 0, 0
local n = (#KEYS - 2) / 3
for i = 0, n - 1 do
  local akey, pkey, rkey = KEYS[3 + 3 * i], KEYS[4 + 3 * i], KEYS[5 + 3 * i]
  local a = 5 + 8 * i
  local op, pid = ARGV[a], ARGV[a + 1]
  if redis.call('SET', akey, '1', 'NX', 'EX', ttl) then
    applied = applied + 1
    if op == 'create' then
      redis.call('SET', pkey, ARGV[a + 2])
      redis.call('XADD', KEYS[1], '*', 'p', pid, 'c', ARGV[a + 3], 'a', ARGV[a + 4], 'v', ARGV[a + 5], 't', ARGV[a + 6])
      -- newest first, at most `keep` ids (contract.encode_recent)
      local ids, count = {pid}, 1
      for id in string.gmatch(redis.call('GET', rkey) or '', '[^\\n]+') do
        if count >= keep then break end
        if id ~= pid then ids[#ids + 1] = id; count = count + 1 end
      end
      redis.call('SET', rkey, table.concat(ids, '\\n'))
    else
      local cur = redis.call('GETRANGE', pkey, off, off)
      if cur ~= '' then
        local f = string.byte(cur)
        if op == 'delete' then
          f = bit.bor(f, 2)
          redis.call('XADD', KEYS[1], '*', 'p', pid, 'd', '1')
        else
          local set, clear = string.match(op, 'flags:(%d+):(%d+)')
          f = bit.bor(bit.band(f, bit.bnot(tonumber(clear))), tonumber(set))
          redis.call('XADD', KEYS[1], '*', 'p', pid, 'x', (tonumber(set) > 0) and '1' or '0')
        end
        redis.call('SETRANGE', pkey, off, string.char(f))
      end
    end
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', '@LOG_POST@', ARGV[a + 7])
  else
    dups = dups + 1
  end
end
return {applied, dups}
""".replace("@LOG_POST@", contract.LOG_POST)

# KEYS: event log, then (applied, post, stats, user's seen set, community hot list) per event.
# ARGV: ttl, positives offset, negatives offset, views offset, dim, log maxlen, seen kept,
#       hot offset (hot f4 then hot_at f8), half-life s, hot-list epoch, hot-list length,
#       then 7 per event: positives add, negatives add, views add, stats delta ('' = none),
#       post id, timestamp, payload.
# Hotness follows core/hotness.py (`add` for the record, `list_score` for the hot list).
# Returns {applied, dups, post key, stats, post key, stats, ...} for moved posts.
ENGAGEMENTS_LUA = """
local ttl = ARGV[1]
local offs = {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])}
local dim, maxlen, seen_keep = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local hot_off, half_life, epoch, hot_keep = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local fmt = '<' .. string.rep('f', dim + 1)
local applied, dups = 0, 0
local moved = {}
local n = (#KEYS - 1) / 5
for i = 0, n - 1 do
  local akey, pkey, skey, seen, hkey = KEYS[2 + 5 * i], KEYS[3 + 5 * i], KEYS[4 + 5 * i], KEYS[5 + 5 * i], KEYS[6 + 5 * i]
  local a = 12 + 7 * i
  if redis.call('SET', akey, '1', 'NX', 'EX', ttl) then
    applied = applied + 1
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
    local delta = ARGV[a + 3]
    if delta ~= '' then
      local cur = redis.call('GET', skey)
      if cur then
        local x = {struct.unpack(fmt, cur)}
        local d = {struct.unpack(fmt, delta)}
        local out = {}
        for j = 1, dim + 1 do out[j] = x[j] + d[j] end
        delta = struct.pack(fmt, unpack(out))
      end
      redis.call('SET', skey, delta)
      moved[pkey] = delta
    end
    -- any engagement means the user has seen the post: the seen filter drops it next time
    redis.call('ZADD', seen, ARGV[a + 5], ARGV[a + 4])
    redis.call('ZREMRANGEBYRANK', seen, 0, -(seen_keep + 1))
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', '@LOG_ENGAGEMENT@', ARGV[a + 6])
  else
    dups = dups + 1
  end
end
local out = {applied, dups}
for k, v in pairs(moved) do out[#out + 1] = k; out[#out + 1] = v end
return out
""".replace("@LOG_ENGAGEMENT@", contract.LOG_ENGAGEMENT).replace("@MAX_EXPONENT@", repr(MAX_EXPONENT))
