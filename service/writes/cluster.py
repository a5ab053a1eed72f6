"""The write path against a Redis Cluster: each batch's script runs once per slot group.

One node runs a batch's script (service/writes/scripts.py) as it is: every event of the
batch, all or nothing. A cluster cannot: a script's keys must share a slot, and one
event touches several (a like moves the post's counters {p:..}, the community's hot list
{c:..}, the user's seen set {u:..} and the event log {g}). So here:

1. Each event has an owner slot: its post's for post and engagement events, its user's
   for graph events, the global {g} for moderators' rules. A batch's events are grouped
   by owner slot, and each group's script runs on its own node, with its keys of that
   slot declared and the batch's other keys passed as data.
2. The script is the single-node script rewritten (CLUSTER_SCRIPTS): a write to a key of
   another slot is not made but returned (deferred) and then sent by the client to that
   key's node; a read of another slot's key (a moderator's live role) is taken from a
   snapshot the client read just before.
3. Order: applied markers read (client: new, duplicate, or refused); when the batch has
   several groups, every group's script runs in check mode first (every refusal found
   before anything is written); markers claimed as pending; every group applied; the
   deferred writes sent; markers settled. Only then is the batch acknowledged.

Atomic: everything a group's script writes in its own slot (a post's record flags and
counters, its engager statistics, the experiment candidate's copy of the post; a user's
live graph and block list; all of a rules batch's pins, caps, rules counter and removed
list). Not atomic across a batch: the groups, and each group's deferred writes (the
event log, live streams, recent and hot lists, seen sets, a removed post's flags); a
crash between them leaves markers pending, and the client's retry (it gets UNAVAILABLE)
applies the event again: exactly once when nothing failed, at least once after a failure
(a hot list score or a counter may then count the event twice; ids in the event log and
streams may repeat, and readers apply them idempotently). A batch refused by a check
writes nothing; a concurrent write between the check and the apply can still refuse a
later group after an earlier one applied (the error names the event).

Durability: every node's writes end with WAIT for `wait_replicas` replicas (default 1,
NICHEFEED_REDIS_WAIT_REPLICAS) within `wait_ms`; a write not acknowledged by them
answers UNAVAILABLE and is retried. Redis' WAIT is not a consensus: a failover within the
wait, or to a replica that had not acked, can still lose a write that was never
acknowledged to the client, and nothing the client was told is applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from redis.crc import key_slot
from redis.exceptions import NoScriptError

from service.cluster_transport import ClusterTransport, NodeFailure
from service.writes.scripts import _MARKERS_LUA, ENGAGEMENTS_LUA, GRAPH_LUA, POSTS_LUA, PREPEND_RECENT_LUA, RULES_LUA


@dataclass(frozen=True)
class Layout:
    """Where a kind's script keeps its keys and values: header then per-event blocks."""

    header_keys: int
    event_keys: int
    header_args: int
    event_args: int
    owner: int | None  # index in the event's keys of the key whose slot owns it; None: header key 0
    digest: int  # index in the event's args of the event's digest


LAYOUTS = {
    "post": Layout(3, 5, 4, 12, owner=1, digest=8),
    "engagement": Layout(2, 8, 14, 10, owner=1, digest=7),
    "graph": Layout(1, 3, 5, 8, owner=1, digest=5),
    "rule": Layout(6, 3, 5, 9, owner=None, digest=6),
}

# Read-modify-writes that may land on another slot, as one-key scripts of their own: run
# in place when the key is the group's, else sent to the key's node (atomic there).
PSEUDO = {
    "NF_PREPEND": PREPEND_RECENT_LUA + "prepend_recent(KEYS[1], ARGV[1], tonumber(ARGV[2]))\n",
    "NF_FLAGS": """
local off, set, clear = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cur = redis.call('GETRANGE', KEYS[1], off, off)
if cur ~= '' then
  local f = bit.bor(bit.band(string.byte(cur), bit.bnot(clear)), set)
  redis.call('SETRANGE', KEYS[1], off, string.char(f))
end
""",
}

# ARGV of a cluster script: mode, n keys, every key of the script (as single node has
# them), n events, each event's marker status, n snapshot reads, (read id, value or the
# NIL marker) each, then the single-node script's ARGV. KEYS: the keys of the group's slot.
_PRELUDE = """
local RK, RA = KEYS, ARGV
local CHECK_ONLY = RA[1] == 'check'
local p = 2
local ALL = {}
for i = 1, tonumber(RA[p]) do ALL[i] = RA[p + i] end
p = p + #ALL + 1
local STATUS, ns = {}, tonumber(RA[p])
for i = 1, ns do STATUS[i - 1] = RA[p + i] end
p = p + ns + 1
local SNAP, nn = {}, tonumber(RA[p])
for i = 1, nn do
  local v = RA[p + 2 * i]
  if v == '@NIL@' then v = false end
  SNAP[RA[p + 2 * i - 1]] = v
end
p = p + 2 * nn + 1
local A = {}
for i = p, #RA do A[#A + 1] = RA[i] end
local KEYS, ARGV = ALL, A
local LOCAL, MARKER = {}, {}
for _, k in ipairs(RK) do LOCAL[k] = true end
local DEFERRED = {}
local READS = {GET = true, GETRANGE = true, HGET = true, SCARD = true, SISMEMBER = true}
local PSEUDO = {}
@PSEUDO@
local function call(cmd, key, ...)
  if MARKER[key] then return nil end  -- the client claims and settles markers
  if LOCAL[key] then
    if PSEUDO[cmd] then return PSEUDO[cmd](key, ...) end
    return redis.call(cmd, key, ...)
  end
  local args = {...}
  for i = 1, #args do args[i] = tostring(args[i]) end
  if READS[cmd] then
    local id = cmd .. '\\t' .. key .. '\\t' .. table.concat(args, '\\t')
    local v = SNAP[id]
    if v == nil then error({err = 'NFREMOTE ' .. id}) end
    return v
  end
  DEFERRED[#DEFERRED + 1] = {cmd, key, unpack(args)}
  return nil
end
-- statuses come from the client (markers live in their own slots)
local function marker(akey, digest, i, batch_ids)
  MARKER[akey] = true
  return STATUS[i]
end
local function body()
"""
_EPILOGUE = """
end
local result = body()
return {result, DEFERRED}
"""


def _pseudo_functions() -> str:
    """PSEUDO's scripts as local functions of the prelude (KEYS[1], ARGV[..] as arguments)."""
    out = []
    for name, src in PSEUDO.items():
        body = src.replace("KEYS[1]", "key").replace("ARGV[1]", "a1").replace("ARGV[2]", "a2").replace("ARGV[3]", "a3")
        out.append(f"PSEUDO['{name}'] = function(key, a1, a2, a3)\n{body}\nend")
    return "\n".join(out)


def _rewrite(script: str, replacements: list[tuple[str, str]], check_before: str) -> str:
    """The single-node script as a cluster group's: markers from the client, every
    redis.call through call(), the given blocks swapped for pseudo commands, and a return
    after the checks in check mode."""
    assert script.startswith(_MARKERS_LUA)
    body = script[len(_MARKERS_LUA) :]
    for old, new in replacements:
        assert body.count(old) == 1, old
        body = body.replace(old, new)
    assert body.count(check_before) == 1, check_before
    body = body.replace(check_before, "if CHECK_ONLY then return {'ok'} end\n" + check_before)
    body = re.sub(r"\bredis\.call\(", "call(", body)
    return _PRELUDE.replace("@PSEUDO@", _pseudo_functions()) + body + _EPILOGUE


_RULES_FLAGS_BLOCK = re.compile(
    r"      local cur = redis\.call\('GETRANGE', pkey, off, off\)\n      if cur ~= '' then\n.*?\n      end\n", re.S
)


def _rules_script() -> str:
    match = _RULES_FLAGS_BLOCK.search(RULES_LUA)
    assert match, "RULES_LUA's flags block moved: update service/writes/cluster.py"
    removed = re.search(r"bit\.bor\(f, (\d+)\)", match.group(0)).group(1)
    swap = f"      if op == 'remove' then call('NF_FLAGS', pkey, off, {removed}, 0) else call('NF_FLAGS', pkey, off, 0, {removed}) end\n"
    return _rewrite(RULES_LUA, [(match.group(0), swap)], "local applied, dups, rules_changed")


CLUSTER_SCRIPTS = {
    "post": _rewrite(
        POSTS_LUA,
        # the list may live in another slot: its read-modify-write runs where it lives
        [(PREPEND_RECENT_LUA, ""), ("prepend_recent(rkey, pid, keep)", "call('NF_PREPEND', rkey, pid, keep)")],
        "local function apply(",
    ),
    "engagement": _rewrite(ENGAGEMENTS_LUA, [], "-- counters and hotness of one version's"),
    "graph": _rewrite(GRAPH_LUA, [], "local applied, dups = 0, 0\nfor i = 0, n - 1 do\n  local akey, gkey, bkey"),
    "rule": _rules_script(),
}

# A marker while its event's writes are in flight (service/writes/markers.py holds the digest).
PENDING = "|p"
NIL = "@NIL@"
MAX_REMOTE_READS = 256


class ClusterBatchRunner:
    """Runs one batch's KEYS and ARGV (as the single-node script takes them) on a cluster."""

    def __init__(self, transport: ClusterTransport, timeout_s: float, ttl_s: int, wait_replicas: int, wait_ms: int):
        self.transport = transport
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.wait = (wait_replicas, wait_ms)
        self._sha: dict[str, str] = {}

    def _trip(self, commands: list[tuple], write: bool = False) -> list:
        if not commands:
            return []
        n, ms = self.wait if write else (0, 0)
        return self.transport.round_trip(commands, self.timeout_s, wait_replicas=n, wait_ms=ms)

    def run(self, kind: str, keys: list, argv: list) -> list:
        """The reply the single-node script would give ({applied, dups, ...} or {'err', i,
        reason}), after every group applied and every deferred write landed."""
        lay = LAYOUTS[kind]
        hk, ek, ha, ea = lay.header_keys, lay.event_keys, lay.header_args, lay.event_args
        n = (len(keys) - hk) // ek
        ev_keys = [keys[hk + ek * i : hk + ek * (i + 1)] for i in range(n)]
        ev_args = [argv[ha + ea * i : ha + ea * (i + 1)] for i in range(n)]
        markers = [k[0] for k in ev_keys]
        digests = [str(a[lay.digest]) for a in ev_args]

        status = self._statuses(markers, digests)
        if isinstance(status, tuple):
            return ["err", status[0], "conflict"]
        groups: dict[int, list[int]] = {}
        for i in range(n):
            owner = keys[0] if lay.owner is None else ev_keys[i][lay.owner]
            groups.setdefault(key_slot(_b(owner)), []).append(i)

        def group_call(slot: int, members: list[int], mode: str, snap: dict) -> tuple:
            all_keys = keys[:hk] + [k for i in members for k in ev_keys[i]]
            local = [k for k in dict.fromkeys(all_keys) if key_slot(_b(k)) == slot]
            head = [mode, len(all_keys), *all_keys, len(members), *[status[i] for i in members], len(snap)]
            for rid, value in snap.items():
                head += [rid, NIL if value is None else value]
            args = head + argv[:ha] + [a for i in members for a in ev_args[i]]
            return ("EVALSHA", self._sha1(kind), len(local), *local, *args)

        snap: dict[str, bytes | None] = {}
        if len(groups) > 1:  # every refusal before anything is written
            for slot_members, reply in zip(groups.items(), self._scripts(kind, groups, group_call, "check", snap)):
                refused = _refusal(reply[0])
                if refused:
                    return ["err", slot_members[1][refused[0]], refused[1]]
        claim = [i for i in range(n) if status[i] == "new"]
        self._trip([("SET", markers[i], digests[i] + PENDING, "EX", self.ttl_s) for i in claim], write=True)
        applied = dups = 0
        moved: list = []
        deferred: list[tuple] = []
        for (_, members), reply in zip(groups.items(), self._scripts(kind, groups, group_call, "apply", snap)):
            result, later = reply
            refused = _refusal(result)
            if refused:  # a write between the check and now: the groups before it stay applied
                return ["err", members[refused[0]], refused[1]]
            applied += int(result[0])
            dups += int(result[1])
            moved += result[2:]
            deferred += [_as_command(c) for c in later]
        self._trip(deferred, write=True)
        self._trip([("SET", markers[i], digests[i], "EX", self.ttl_s) for i in claim], write=True)
        return [applied, dups, *moved]

    def _statuses(self, markers: list, digests: list) -> list[str] | tuple[int]:
        """new | dup per event (as the scripts' marker() decides), or (index,) of the first
        event whose id was used for a different event. A pending marker (an attempt that
        did not finish) is new: the retry applies it again."""
        (current,) = self._trip([("MGET", *markers)])
        seen: dict[str, str] = {}
        out = []
        for i, (key, dig, cur) in enumerate(zip(markers, digests, current)):
            if key in seen:
                if seen[key] != dig:
                    return (i,)
                out.append("dup")
                continue
            seen[key] = dig
            cur = cur.decode() if cur is not None else None
            if cur is None or cur == dig + PENDING:
                out.append("new")
            elif cur in (dig, "1"):
                out.append("dup")
            else:
                return (i,)
        return out

    def _scripts(self, kind: str, groups: dict, group_call, mode: str, snap: dict) -> list:
        """Every group's script reply, reading the other slots' keys it asks for first."""
        for _ in range(MAX_REMOTE_READS):
            commands = [group_call(slot, members, mode, snap) for slot, members in groups.items()]
            replies = self._trip(commands, write=mode == "apply")
            missing = [j for j, r in enumerate(replies) if _is_noscript(r)]
            if missing:  # a node that has not seen the script (new, or promoted): send it whole
                again = self._trip([_as_eval(commands[j], CLUSTER_SCRIPTS[kind]) for j in missing], mode == "apply")
                for j, r in zip(missing, again):
                    replies[j] = r
            # "NFREMOTE <read id> script: <sha>, on @user_script:<line>." (Redis adds the tail)
            reads = [str(r).split("NFREMOTE ", 1)[1].rsplit(" script: ", 1)[0] for r in replies if _is_remote_read(r)]
            if not reads:
                for r in replies:
                    if isinstance(r, Exception):
                        raise r
                return replies
            values = self._trip([tuple(rid.split("\t")) for rid in dict.fromkeys(reads)])
            snap.update(zip(dict.fromkeys(reads), values))
        raise RuntimeError(f"{kind} script asked for more than {MAX_REMOTE_READS} remote reads")

    def _sha1(self, kind: str) -> str:
        sha = self._sha.get(kind)
        if sha is None:
            import hashlib

            sha = self._sha[kind] = hashlib.sha1(CLUSTER_SCRIPTS[kind].encode()).hexdigest()
        return sha


def _b(key) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode()


def _refusal(result) -> tuple[int, str] | None:
    if result and result[0] in (b"err", "err"):
        reason = result[2].decode() if isinstance(result[2], bytes) else str(result[2])
        return int(result[1]), reason
    return None


def _is_noscript(reply) -> bool:
    return isinstance(reply, NoScriptError)


def _is_remote_read(reply) -> bool:
    return isinstance(reply, Exception) and "NFREMOTE " in str(reply)


def _as_eval(command: tuple, source: str) -> tuple:
    return ("EVAL", source, *command[2:])


def _as_command(deferred: list) -> tuple:
    """A deferred write as the command to send: pseudo commands as their one-key script."""
    name = deferred[0].decode() if isinstance(deferred[0], bytes) else deferred[0]
    if name in PSEUDO:
        return ("EVAL", PSEUDO[name], 1, *deferred[1:])
    return (name, *deferred[1:])


__all__ = ["CLUSTER_SCRIPTS", "ClusterBatchRunner", "NodeFailure"]
