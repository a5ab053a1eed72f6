"""The write path: FeedWriter RPCs put new posts and engagements into Redis at once.

A batch goes through three steps:
1. validate every event (all or nothing: one bad event rejects the batch, and the
   status names its index and field, e.g. `events[3].kind: ...`);
2. one read round trip: which event ids were applied already (retries), which posts
   exist, who the authors are;
3. one Lua script applies the batch atomically: an idempotency marker per event id
   (SET NX, so a retry is applied once), the post records and counters, the live stream
   every worker's live index follows, and the event log that training folds in.
The reply goes out only after Redis acknowledged the script; with the project's Redis
(append-only, fsync always) that means the events are on disk.

Engagement moves a post's vector toward its engagers with the same rule training uses
(service/post_vectors.py), on sufficient statistics kept per post in Redis.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import grpc
import numpy as np
import redis

from nichefeed.v1 import writes_pb2, writes_pb2_grpc
from service import contract, post_vectors
from service.bundle import Bundle, BundleHolder
from service.metrics import METRICS
from service.scoring import NON_MEMBER_STANDING, ROLE_STANDING

log = logging.getLogger("nichefeed.writes")

WRITER_SERVICE_NAME = writes_pb2.DESCRIPTOR.services_by_name["FeedWriter"].full_name
MAX_BATCH = 1000
MAX_STREAM_EVENTS = 1_000_000
STREAM_BATCH = 500  # events applied per script while a client stream is read
MAX_FUTURE_S = 86_400  # a timestamp more than a day ahead is a client bug

_KIND_OF = {getattr(writes_pb2, k.upper()): k for k in contract.KINDS}
_KIND_CODE = {k: i for i, k in enumerate(contract.KINDS)}


class WriteRejected(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def _check_id(value: str, where: str) -> None:
    if not value:
        raise WriteRejected(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: must not be empty")
    problem = contract.id_problem(value)
    if problem:
        raise WriteRejected(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: {problem}")


def _check_ts(ts: int, now: float, where: str) -> int:
    if ts < 0 or ts > now + MAX_FUTURE_S:
        raise WriteRejected(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: {ts} is not a plausible unix time")
    return ts or int(now)


# KEYS: live stream, event log, then (applied, post, community recent list) per event.
# ARGV: ttl, flags offset, log maxlen, recent list length, then 8 per event:
#       op, post id, record (create), community id, author id, vector (create), created_at, log payload.
# op: "create" | "flags:<set>:<clear>" | "delete"
_POSTS_LUA = """
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

# KEYS: event log, then (applied, post, stats, user's seen set) per event.
# ARGV: ttl, positives offset, negatives offset, views offset, dim, log maxlen, seen kept,
#       then 7 per event: positives add, negatives add, views add, stats delta ('' = none),
#       post id, timestamp, payload.
# Returns {applied, dups, post key, stats, post key, stats, ...} for moved posts.
_ENGAGEMENTS_LUA = """
local ttl = ARGV[1]
local offs = {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])}
local dim, maxlen, seen_keep = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local fmt = '<' .. string.rep('f', dim + 1)
local applied, dups = 0, 0
local moved = {}
local n = (#KEYS - 1) / 4
for i = 0, n - 1 do
  local akey, pkey, skey, seen = KEYS[2 + 4 * i], KEYS[3 + 4 * i], KEYS[4 + 4 * i], KEYS[5 + 4 * i]
  local a = 8 + 7 * i
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
""".replace("@LOG_ENGAGEMENT@", contract.LOG_ENGAGEMENT)


@dataclass
class FoldIn:
    """Per model version: what moving a vector needs (computed once per bundle)."""

    version: str
    gram_inv: np.ndarray  # (X'X + reg I)^-1 over the bundle's user factors
    alpha: float


def fold_in_for(bundle: Bundle) -> FoldIn:
    als = bundle.manifest.params.get("als", {})
    gram_inv = post_vectors.fold_in_gram(bundle[contract.USER_FACTORS_FILE], float(als.get("regularization", 0.05)))
    return FoldIn(bundle.version, gram_inv, float(als.get("alpha", 10.0)))


class WriteApplier:
    """Validates and applies batches against the serving bundle and Redis."""

    def __init__(self, holder: BundleHolder, client: redis.Redis):
        self.holder = holder
        self.client = client
        self._posts_script = client.register_script(_POSTS_LUA)
        self._engagements_script = client.register_script(_ENGAGEMENTS_LUA)
        self._fold: FoldIn | None = None

    def _bundle(self) -> Bundle:
        bundle = self.holder.current
        if bundle is None:
            raise WriteRejected(grpc.StatusCode.UNAVAILABLE, "no model loaded yet")
        return bundle

    def _fold_in(self, bundle: Bundle) -> FoldIn:
        fold = self._fold
        if fold is None or fold.version != bundle.version:
            fold = self._fold = fold_in_for(bundle)
        return fold

    # -- posts ------------------------------------------------------------------------
    def write_posts(self, events, now: float) -> tuple[int, int]:
        bundle = self._bundle()
        version = bundle.version
        for i, e in enumerate(events):
            _check_id(e.event_id, f"events[{i}].event_id")
            _check_id(e.post_id, f"events[{i}].post_id")
            if e.op == writes_pb2.POST_OP_UNSPECIFIED or e.op not in writes_pb2.PostOp.values():
                raise WriteRejected(grpc.StatusCode.INVALID_ARGUMENT, f"events[{i}].op: must be CREATE, SET_VISIBILITY or DELETE")
            if e.visibility not in writes_pb2.Visibility.values():
                raise WriteRejected(grpc.StatusCode.INVALID_ARGUMENT, f"events[{i}].visibility: unknown value {e.visibility}")
            if e.op == writes_pb2.POST_OP_CREATE:
                _check_id(e.author_id, f"events[{i}].author_id")
                _check_id(e.community_id, f"events[{i}].community_id")
                if e.community_id not in bundle.community_row:
                    raise WriteRejected(grpc.StatusCode.INVALID_ARGUMENT, f"events[{i}].community_id: unknown community {e.community_id!r}")
                _check_ts(e.created_at, now, f"events[{i}].created_at")
        if not events:
            return 0, 0
        # One read round trip: applied markers, existing post records, author records.
        pipe = self.client.pipeline(transaction=False)
        pipe.mget([contract.applied_key(e.event_id) for e in events])
        pipe.mget([contract.post_key(version, e.post_id) for e in events])
        pipe.mget([contract.user_key(version, e.author_id or "-") for e in events])
        applied_before, records, authors = pipe.execute()
        created_here: set[str] = set()
        keys = [contract.live_stream_key(version), contract.EVENT_LOG_KEY]
        argv: list = [contract.APPLIED_TTL_S, contract.post_field_offset("flags"), contract.EVENT_LOG_MAXLEN,
                      contract.RECENT_PER_COMMUNITY]
        private_comm = bundle[contract.COMMUNITY_PRIVATE_FILE]
        for i, e in enumerate(events):
            exists = records[i] is not None or e.post_id in bundle.post_row or e.post_id in created_here
            if applied_before[i] is None:
                if e.op == writes_pb2.POST_OP_CREATE and exists:
                    raise WriteRejected(grpc.StatusCode.ALREADY_EXISTS, f"events[{i}].post_id: post {e.post_id!r} already exists")
                if e.op != writes_pb2.POST_OP_CREATE and not exists:
                    raise WriteRejected(grpc.StatusCode.INVALID_ARGUMENT, f"events[{i}].post_id: unknown post {e.post_id!r}")
            keys += [contract.applied_key(e.event_id), contract.post_key(version, e.post_id),
                     contract.recent_key(version, e.community_id or "-")]
            record = vector = b""
            created = 0
            if e.op == writes_pb2.POST_OP_CREATE:
                created_here.add(e.post_id)
                created = _check_ts(e.created_at, now, "")
                record, vector = self._new_post(bundle, e, bundle.community_row[e.community_id], created, authors[i])
                op = "create"
            elif e.op == writes_pb2.POST_OP_DELETE:
                op = "delete"
            else:
                comm = self._community_of(bundle, e.post_id, records[i])
                members_only = e.visibility == writes_pb2.VISIBILITY_MEMBERS or bool(private_comm[comm])
                op = f"flags:{contract.FLAG_PRIVATE if members_only else 0}:{0 if members_only else contract.FLAG_PRIVATE}"
            payload = contract.encode_log(e.event_id, writes_pb2.PostOp.Name(e.op), e.post_id, e.author_id,
                                          e.community_id, created, writes_pb2.Visibility.Name(e.visibility))
            argv += [op, e.post_id, record, e.community_id, e.author_id, vector, created, payload]
        applied, dups = self._posts_script(keys=keys, args=argv)
        return int(applied), int(dups)

    @staticmethod
    def _community_of(bundle: Bundle, post_id: str, record: bytes | None) -> int:
        if record is not None:
            return int(contract.decode_posts([record])["community"][0])
        return int(bundle[contract.POST_COMMUNITY_FILE][bundle.post_row[post_id]])

    def _new_post(self, bundle: Bundle, e, community: int, created: int, author_raw: bytes | None) -> tuple[bytes, bytes]:
        rec = np.zeros(1, dtype=contract.POST_DTYPE)
        rec["row"] = -1
        rec["community"] = community
        rec["author"] = bundle.user_row.get(e.author_id, -1)
        private = bool(bundle[contract.COMMUNITY_PRIVATE_FILE][community]) or e.visibility == writes_pb2.VISIBILITY_MEMBERS
        rec["flags"] = contract.FLAG_PRESENT | (contract.FLAG_PRIVATE if private else 0)
        rec["created_at"] = created
        rec["author_trust"] = _author_trust(author_raw, community)
        prior = bundle.new_post_vectors(np.array([community]), rec["author"])
        return contract.encode_posts(rec)[0], prior[0].astype("<f4").tobytes()

    # -- engagements --------------------------------------------------------------------
    def write_engagements(self, events, now: float, offset: int = 0) -> tuple[int, int]:
        bundle = self._bundle()
        version = bundle.version
        for i, e in enumerate(events, start=offset):
            _check_id(e.event_id, f"events[{i}].event_id")
            _check_id(e.user_id, f"events[{i}].user_id")
            _check_id(e.post_id, f"events[{i}].post_id")
            if e.kind not in _KIND_OF:
                raise WriteRejected(grpc.StatusCode.INVALID_ARGUMENT, f"events[{i}].kind: must be one of {', '.join(k.upper() for k in contract.KINDS)}")
            _check_ts(e.ts, now, f"events[{i}].ts")
        if not events:
            return 0, 0
        pipe = self.client.pipeline(transaction=False)
        pipe.mget([contract.applied_key(e.event_id) for e in events])
        pipe.mget([contract.post_key(version, e.post_id) for e in events])
        applied_before, records = pipe.execute()
        for i, e in enumerate(events):
            if applied_before[i] is None and records[i] is None:
                raise WriteRejected(grpc.StatusCode.INVALID_ARGUMENT, f"events[{i + offset}].post_id: unknown post {e.post_id!r}")
        fold = self._fold_in(bundle)
        user_factors = bundle[contract.USER_FACTORS_FILE]
        dim = user_factors.shape[1]
        keys = [contract.EVENT_LOG_KEY]
        argv: list = [contract.APPLIED_TTL_S, contract.post_field_offset("positives"),
                      contract.post_field_offset("negatives"), contract.post_field_offset("views"), dim,
                      contract.EVENT_LOG_MAXLEN, contract.SEEN_READ_MAX]
        for e in events:
            kind = _KIND_OF[e.kind]
            weight = float(contract.KIND_WEIGHT[_KIND_CODE[kind]])
            delta = b""
            row = bundle.user_row.get(e.user_id)
            if weight > 0 and row is not None:
                # The confidence this engagement adds (training: 1 + alpha * log1p(weight)).
                c = 1.0 + fold.alpha * float(np.log1p(weight))
                stats = np.empty(dim + 1, dtype="<f4")
                stats[:dim] = c * np.asarray(user_factors[row])
                stats[dim] = c - 1.0
                delta = stats.tobytes()
            keys += [contract.applied_key(e.event_id), contract.post_key(version, e.post_id),
                     contract.engager_stats_key(version, e.post_id), contract.seen_key(e.user_id)]
            ts = e.ts or int(now)
            argv += [max(weight, 0.0), 1.0 if kind in contract.NEGATIVE_KIND_NAMES else 0.0, 1.0, delta,
                     e.post_id, ts, contract.encode_log(e.event_id, e.user_id, e.post_id, kind, ts)]
        reply = self._engagements_script(keys=keys, args=argv)
        applied, dups = int(reply[0]), int(reply[1])
        if len(reply) > 2:
            self._move_vectors(bundle, fold, reply[2:], dim)
        return applied, dups

    def _move_vectors(self, bundle: Bundle, fold: FoldIn, moved: list, dim: int) -> None:
        """New vectors for posts whose engager statistics changed, to the live stream."""
        prefix = contract.post_key_prefix(bundle.version).encode()
        post_ids = [k[len(prefix):].decode() for k in moved[0::2]]
        stats = np.frombuffer(b"".join(moved[1::2]), dtype="<f4").reshape(-1, dim + 1)
        records = contract.decode_posts(self.client.mget([contract.post_key(bundle.version, p) for p in post_ids]))
        base = np.empty((len(post_ids), dim), dtype=np.float32)
        for j, p in enumerate(post_ids):
            row = bundle.post_row.get(p)
            if row is not None:
                base[j] = bundle[contract.POST_VECTORS_FILE][row]
            else:  # a live post: its prior, as when it was created
                base[j] = bundle.new_post_vectors(records["community"][j:j + 1], records["author"][j:j + 1])[0]
        engaged = post_vectors.engaged_from_stats(stats[:, :dim], fold.gram_inv)
        vectors = post_vectors.blend(base, engaged, stats[:, dim])
        pipe = self.client.pipeline(transaction=False)
        key = contract.live_stream_key(bundle.version)
        for j, p in enumerate(post_ids):
            if records["flags"][j] & contract.FLAG_DELETED:
                continue
            pipe.xadd(key, {contract.LIVE_POST: p, contract.LIVE_VECTOR: vectors[j].astype("<f4").tobytes()})
        pipe.execute()


def _author_trust(raw: bytes | None, community: int) -> float:
    """The author's standing in the community: training's role prior (a live post has no
    track record yet to move it)."""
    try:
        user = contract.decode_user(raw) if raw is not None else None
    except contract.ContractError:
        user = None
    role = dict(zip(user.communities.tolist(), user.roles.tolist())).get(community, 0) if user else 0
    return float(ROLE_STANDING[role]) if role > 0 else NON_MEMBER_STANDING


class FeedWriterServicer(writes_pb2_grpc.FeedWriterServicer):
    def __init__(self, applier: WriteApplier):
        self.applier = applier

    def _run(self, method: str, kind: str, n: int, fn, context):
        t0 = time.perf_counter()
        outcome = "applied"
        try:
            if n > MAX_BATCH:
                outcome = "too_large"
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"events: {n} events, at most {MAX_BATCH} a call")
            applied, dups = fn()
            METRICS.writes.labels(kind=kind, outcome="applied").inc(applied)
            if dups:
                METRICS.writes.labels(kind=kind, outcome="duplicate").inc(dups)
            return writes_pb2.WriteResponse(applied=applied, duplicates=dups)
        except WriteRejected as exc:
            outcome = "rejected"
            METRICS.writes.labels(kind=kind, outcome=outcome).inc(n)
            context.abort(exc.code, str(exc))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            outcome = "unavailable"
            METRICS.writes.labels(kind=kind, outcome=outcome).inc(n)
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          f"feature store unavailable ({exc.__class__.__name__}); retry with the same event ids")
        finally:
            METRICS.write_latency.labels(method=method).observe(time.perf_counter() - t0)

    def WritePosts(self, request, context):
        if request is UNDECODABLE:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request: not a valid nichefeed.v1.WritePostsRequest")
        events = list(request.events)
        return self._run("WritePosts", "post", len(events), lambda: self.applier.write_posts(events, time.time()), context)

    def WriteEngagements(self, request, context):
        if request is UNDECODABLE:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request: not a valid nichefeed.v1.WriteEngagementsRequest")
        events = list(request.events)
        return self._run("WriteEngagements", "engagement", len(events),
                         lambda: self.applier.write_engagements(events, time.time()), context)

    def StreamEngagements(self, request_iterator, context):
        """One event a message, applied in batches of STREAM_BATCH as they arrive."""
        def batches():
            batch, seen = [], 0
            for event in request_iterator:
                if event is UNDECODABLE:
                    raise WriteRejected(grpc.StatusCode.INVALID_ARGUMENT, f"events[{seen}]: not a valid nichefeed.v1.EngagementEvent")
                seen += 1
                batch.append(event)
                if len(batch) >= STREAM_BATCH:
                    yield batch
                    batch = []
            if batch:
                yield batch
        return self._apply_stream("StreamEngagements", batches(), context)

    def StreamEngagementBatches(self, request_iterator, context):
        """A batch a message (at most MAX_BATCH events): one decode per batch, not per event."""
        def batches():
            seen = 0
            for request in request_iterator:
                if request is UNDECODABLE:
                    raise WriteRejected(grpc.StatusCode.INVALID_ARGUMENT,
                                        f"events[{seen}]: message is not a valid nichefeed.v1.WriteEngagementsRequest")
                if len(request.events) > MAX_BATCH:
                    raise WriteRejected(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                        f"events: a batch of {len(request.events)} events, at most {MAX_BATCH} a message")
                seen += len(request.events)
                yield list(request.events)
        return self._apply_stream("StreamEngagementBatches", batches(), context)

    def _apply_stream(self, method: str, batches, context):
        """Apply batches as they arrive. A bad event rejects its own batch and ends the
        stream; batches before it stay applied (the status says how many)."""
        t0 = time.perf_counter()
        applied = dups = seen = 0
        batch: list = []
        try:
            for batch in batches:
                if seen + len(batch) > MAX_STREAM_EVENTS:
                    raise WriteRejected(grpc.StatusCode.RESOURCE_EXHAUSTED, f"events: more than {MAX_STREAM_EVENTS} in one stream")
                a, d = self.applier.write_engagements(batch, time.time(), offset=seen)
                applied, dups, seen = applied + a, dups + d, seen + len(batch)
                batch = []  # applied: a later failure does not count these
        except WriteRejected as exc:
            outcome = "too_large" if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED else "rejected"
            METRICS.writes.labels(kind="engagement", outcome=outcome).inc(len(batch))
            context.abort(exc.code, f"{exc} ({applied} events applied before this batch)")
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            METRICS.writes.labels(kind="engagement", outcome="unavailable").inc(len(batch))
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          f"feature store unavailable ({exc.__class__.__name__}) after {applied} applied events; "
                          "resend the rest with the same event ids")
        finally:
            METRICS.write_latency.labels(method=method).observe(time.perf_counter() - t0)
        METRICS.writes.labels(kind="engagement", outcome="applied").inc(applied)
        if dups:
            METRICS.writes.labels(kind="engagement", outcome="duplicate").inc(dups)
        return writes_pb2.WriteResponse(applied=applied, duplicates=dups)


class _Undecodable:
    """Stands for bytes that are not the expected message (gRPC would answer INTERNAL)."""


UNDECODABLE = _Undecodable()


def _safe(message_cls):
    def parse(data: bytes):
        try:
            return message_cls.FromString(data)
        except Exception:  # DecodeError, or invalid UTF-8 in a string field
            return UNDECODABLE
    return parse


def writer_handlers(servicer: FeedWriterServicer) -> grpc.GenericRpcHandler:
    """FeedWriter's handlers, with deserializers that turn garbage into INVALID_ARGUMENT."""
    out = writes_pb2.WriteResponse.SerializeToString
    return grpc.method_handlers_generic_handler(WRITER_SERVICE_NAME, {
        "WritePosts": grpc.unary_unary_rpc_method_handler(
            servicer.WritePosts, request_deserializer=_safe(writes_pb2.WritePostsRequest), response_serializer=out),
        "WriteEngagements": grpc.unary_unary_rpc_method_handler(
            servicer.WriteEngagements, request_deserializer=_safe(writes_pb2.WriteEngagementsRequest), response_serializer=out),
        "StreamEngagements": grpc.stream_unary_rpc_method_handler(
            servicer.StreamEngagements, request_deserializer=_safe(writes_pb2.EngagementEvent), response_serializer=out),
        "StreamEngagementBatches": grpc.stream_unary_rpc_method_handler(
            servicer.StreamEngagementBatches, request_deserializer=_safe(writes_pb2.WriteEngagementsRequest),
            response_serializer=out),
    })
