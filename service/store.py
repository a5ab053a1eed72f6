"""The Redis feature store client: one round trip per read, deadline-bounded, packed values.

Every read is one round trip (commands written together, replies read together) with a
time budget that follows the request's deadline: a share of the time the client still
gives it (the rest is for the in-memory fallback), up to a cap. A request that still has
time is not degraded because a busy machine delayed one reply by a few tens of ms, and a
slow or dead Redis still turns into a degraded answer within the client's deadline,
never into a hung handler thread. Without a deadline (the reloader's poll, a client that
sets none) the configured per-call timeout applies.

A circuit breaker stops paying the timeout on every request while Redis is down: after
BREAKER_FAILURES consecutive failures calls fail fast for BREAKER_COOLDOWN_S, then one
call (a request or the reloader's poll) probes; its success closes the breaker, so the
service recovers by itself when Redis returns. Connections that failed mid-reply are
closed before they go back to the pool (no stale replies, no leak).

Against a Redis Cluster (a redis+cluster:// URL, core/redis_conn.py) the same commands go
through service/cluster_transport.py: one round trip to each node they touch, all nodes
at once, a breaker per node. The keys' hash tags (core/contract.py) keep the user's own
keys on one node; the post MGET is split by slot and put back in candidate order.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import hiredis
import numpy as np
import redis
from redis.cluster import RedisCluster

from core import contract
from core.redis_conn import connect, is_cluster
from service.cluster_transport import ClusterTransport, NodeFailure
from service.metrics import METRICS

log = logging.getLogger("nichefeed.store")

# Share of the request's remaining time a Redis round trip may use: the rest is for the
# fallback from memory (a few ms) and the reply.
DEADLINE_SHARE = 0.5
MIN_BUDGET_S = 0.0005  # below this a round trip cannot succeed on this machine: do not try
# At most this long for one round trip, whatever the deadline: a Redis that takes longer
# is sick, and a handler thread waiting on it serves nobody else (the breaker opens after
# BREAKER_FAILURES of them).
MAX_BUDGET_S = 0.5
BREAKER_FAILURES = 3
BREAKER_COOLDOWN_S = 0.5

_TRANSPORT_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class StoreUnavailable(RuntimeError):
    """Redis could not answer in time; the caller degrades. `reason` is a metric label."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"redis {reason}{': ' + detail if detail else ''}")
        self.reason = reason  # timeout | error | circuit_open | no_time


class CircuitBreaker:
    def __init__(self, failures: int = BREAKER_FAILURES, cooldown_s: float = BREAKER_COOLDOWN_S):
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._failures = 0
        self._open_until = 0.0
        self._lock = threading.Lock()
        METRICS.redis_up.set(1)

    def allow(self) -> bool:
        if self._failures < self.threshold:  # the common case, without the lock
            return True
        with self._lock:
            now = time.monotonic()
            if now < self._open_until:
                return False
            self._open_until = now + self.cooldown_s  # this caller probes; the others fail fast
            return True

    def success(self) -> None:
        if self._failures:
            with self._lock:
                if self._failures >= self.threshold:
                    log.warning("redis is answering again: circuit closed")
                    METRICS.redis_up.set(1)
                self._failures = 0
                self._open_until = 0.0

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._failures == self.threshold:
                log.error("redis failed %d times in a row: circuit open, serving degraded", self.threshold)
                METRICS.redis_up.set(0)
            if self._failures >= self.threshold:
                self._open_until = time.monotonic() + self.cooldown_s


@dataclass
class UserReads:
    """What the user's round trip returned (raw; the hydrate stage decodes)."""

    record: bytes | None
    recent: list[bytes | None]  # parallel to the communities asked for
    seen: list[bytes] | None  # None when the reply was not a list (wrong type)
    blocked: set[bytes] | None  # None when unreadable or longer than BLOCKED_READ_MAX
    hot: list[list[bytes]]  # parallel to the communities asked for (empty when unreadable)
    graph: list | dict | Exception  # HGETALL of the user's live graph (core/live_graph.py)
    rules_rev: bytes | None  # the moderators' rules counter (contract.RULES_REV_KEY)


@dataclass
class CommunityReads:
    """A second round trip for communities the first did not know to ask for (joined live)."""

    recent: list[bytes | None]
    hot: list[list[bytes]]


@dataclass
class RulesReads:
    """Every pin in force and every non-member cap, as of one counter value."""

    rev: bytes | None
    pins: list[tuple[bytes, float]]  # (contract.encode_pin member, until)
    caps: dict[bytes, bytes]


def pack(commands: list[tuple | bytes]) -> bytes:
    """The commands in Redis' wire format, packed by hiredis' C packer directly: half the
    cost of redis-py's own packing, which re-encodes every argument in Python first (a
    500-key MGET is ~110 us there, ~55 us here). A command given as bytes is already
    packed (pack_keys)."""
    return b"".join(c if isinstance(c, bytes) else hiredis.pack_command(c) for c in commands)


def pack_keys(command: str, prefix: str, suffix: str, names: list[str]) -> tuple[bytes, list[int] | None]:
    """`command prefix+name+suffix ...` (one key per name) in Redis' wire format, and the
    order its keys were written in (None: the names' own order); the replies to the keys
    come in that order (`in_order` puts them back).

    The keys are written grouped by length, so that each group is one str.join and the
    whole command one encode (an argument's RESP header is its length in bytes, the same
    for every key of a group): ~50 us for the ~320 keys a home feed sends before its
    FAISS search, where building each key string and packing them with hiredis took
    ~95 us; 53 us less CPU a Rank call at 1M posts, answers identical. Names that are
    not all ASCII (a length in characters is not one in bytes) are packed key by key."""
    n = len(names)
    if n < 2 or not (prefix + suffix).isascii() or not "".join(names).isascii():
        return pack([(command, *[prefix + name + suffix for name in names])]), None
    lengths = np.fromiter(map(len, names), dtype=np.int64, count=n)
    order = np.argsort(lengths, kind="stable")
    lengths = lengths[order]
    order_list = order.tolist()
    ordered = operator.itemgetter(*order_list)(names)
    bounds = [0, *(np.flatnonzero(lengths[1:] != lengths[:-1]) + 1).tolist(), n]
    extra, tail = len(prefix) + len(suffix), suffix + "\r\n"
    parts = [f"*{n + 1}\r\n${len(command)}\r\n{command}\r\n"]
    for lo, hi in zip(bounds, bounds[1:]):
        head = f"${int(lengths[lo]) + extra}\r\n{prefix}"
        parts.append(head + (tail + head).join(ordered[lo:hi]) + tail)
    return "".join(parts).encode(), order_list


def in_order(values: list, order: list[int] | None) -> list:
    """Replies to keys written in `order` (pack_keys) back in the names' own order."""
    if order is None:
        return values
    out = [None] * len(values)
    for at, value in zip(order, values):
        out[at] = value
    return out


def _lists(replies: list, n: int) -> list[list[bytes]]:
    """n list replies (empty where a reply is an error, or where none was asked for)."""
    if not replies:
        return [[] for _ in range(n)]
    return [[] if isinstance(r, Exception) else r for r in replies]


def _post_values(reply) -> list[bytes | None]:
    if isinstance(reply, Exception):
        raise StoreUnavailable("error", f"posts MGET: {reply}")
    return reply


def _as_dict(reply) -> dict:
    """HGETALL's reply as a dict (RESP3 answers a map; RESP2 a flat list)."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2]))


class Pending:
    """Commands sent on a pooled connection whose replies are not read yet: the store's
    `finish` reads them (and gives the connection back), `abandon` drops them."""

    __slots__ = ("store", "op", "conn", "n", "sent_s", "end", "orders")

    def __init__(self, store: FeatureStore, op: str, conn, n: int, sent_s: float, end: float):
        self.store, self.op, self.conn, self.n = store, op, conn, n
        self.sent_s = sent_s  # seconds the send took
        self.end = end  # time.monotonic() by which the replies must have come
        self.orders: list = []  # per command, the order pack_keys wrote its keys in

    def take(self):
        conn, self.conn = self.conn, None
        if conn is None:
            raise RuntimeError("replies already read or abandoned")
        return conn

    def abandon(self) -> None:
        """Give the connection back without reading: closed first, so that the replies
        still on their way never reach another request. Harmless once read."""
        if self.conn is not None:
            conn = self.take()
            conn.disconnect()
            self.store.client.connection_pool.release(conn)


class FeatureStore:
    def __init__(
        self, url: str, timeout_ms: float = 50.0, max_connections: int = 64, max_budget_s: float = MAX_BUDGET_S
    ):
        self.timeout_s = timeout_ms / 1000.0  # the budget of a call without a deadline
        self.max_budget_s = max_budget_s
        self.url = url
        self.client = connect(
            url,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            max_connections=max_connections,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self.breaker = CircuitBreaker()
        self.cluster = ClusterTransport(self.client, CircuitBreaker) if is_cluster(self.client) else None
        self._latency = {op: METRICS.redis_latency.labels(op=op) for op in ("user", "posts", "pointer")}
        self._errors = {op: METRICS.redis_errors.labels(op=op) for op in ("user", "posts", "pointer")}

    def budget(self, deadline: float | None) -> float:
        """Seconds one round trip may take now (StoreUnavailable('no_time') if too few):
        a share of the time left before the deadline, up to the cap; without a deadline,
        the configured timeout."""
        timeout = self.timeout_s
        if deadline is not None:
            timeout = min(self.max_budget_s, (deadline - time.monotonic()) * DEADLINE_SHARE)
        if timeout < MIN_BUDGET_S:
            raise StoreUnavailable("no_time", "the request's deadline leaves no time for Redis")
        return timeout

    def round_trip(self, op: str, commands: list[tuple], deadline: float | None = None) -> list:
        """Send `commands` in one write and read every reply, within the budget.
        A reply that is a Redis error (e.g. WRONGTYPE) is returned as the exception."""
        timeout = self.budget(deadline)
        if self.cluster is not None:
            return self._cluster_round_trip(op, commands, timeout)
        return self.finish(self._send(op, commands, timeout))

    def send(self, op: str, commands: list[tuple], deadline: float | None = None) -> Pending | None:
        """Send `commands` now and read their replies later with `finish` (or give the
        connection up with `Pending.abandon`): Redis works on them while the caller does
        something else. None against a Redis Cluster (its transport reads each node's
        replies as it sends): the caller makes an ordinary round trip instead."""
        timeout = self.budget(deadline)
        if self.cluster is not None:
            return None
        return self._send(op, commands, timeout)

    def _send(self, op: str, commands: list[tuple], timeout: float) -> Pending:
        if not self.breaker.allow():
            raise StoreUnavailable("circuit_open")
        pool = self.client.connection_pool
        t0 = time.perf_counter()
        conn = None
        try:
            conn = pool.get_connection()
            conn.send_packed_command([pack(commands)], check_health=False)
        except BaseException as exc:
            if conn is not None:
                conn.disconnect()
                pool.release(conn)
            if isinstance(exc, _TRANSPORT_ERRORS):
                raise self._failed(op, exc) from exc
            raise
        return Pending(self, op, conn, len(commands), time.perf_counter() - t0, time.monotonic() + timeout)

    def finish(self, pending: Pending, more: list[tuple] = (), deadline: float | None = None) -> list:
        """The replies of a sent Pending, then of `more` commands sent now on the same
        connection (in one list). The wait for them is bounded by the pending's budget,
        or with `more`, by a fresh one from `deadline`."""
        t0 = time.perf_counter()
        conn, pool, op = pending.take(), self.client.connection_pool, pending.op
        n, end = pending.n, pending.end
        try:
            if more:
                end = time.monotonic() + self.budget(deadline)
                conn.send_packed_command([pack(more)], check_health=False)
                n += len(more)
            replies = []
            for _ in range(n):
                left = end - time.monotonic()
                if left <= 0:
                    raise redis.exceptions.TimeoutError("round trip budget spent")
                try:
                    replies.append(conn.read_response(timeout=left))
                except redis.exceptions.ResponseError as exc:
                    replies.append(exc)
        except _TRANSPORT_ERRORS as exc:
            conn.disconnect()  # unread replies must never reach the next request
            raise self._failed(op, exc) from exc
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        self.breaker.success()
        # The time the request spent on Redis: sending, then waiting for the replies once it
        # came for them (not what it did in between, while Redis worked).
        self._latency[op].observe(pending.sent_s + time.perf_counter() - t0)
        return replies

    def _failed(self, op: str, exc: BaseException) -> StoreUnavailable:
        self.breaker.failure()
        self._errors[op].inc()
        reason = "timeout" if isinstance(exc, (redis.exceptions.TimeoutError, TimeoutError)) else "error"
        return StoreUnavailable(reason, f"{op}: {exc.__class__.__name__}: {exc}")

    def _cluster_round_trip(self, op: str, commands: list[tuple], timeout: float) -> list:
        t0 = time.perf_counter()
        try:
            replies = self.cluster.round_trip(commands, timeout)
        except NodeFailure as exc:
            self._errors[op].inc()
            raise StoreUnavailable(exc.reason, f"{op}: {exc}") from exc
        self._latency[op].observe(time.perf_counter() - t0)
        return replies

    # -- reads of the hot path --------------------------------------------------------

    def user_reads(
        self,
        version: str,
        user_id: str,
        community_ids: list[str],
        deadline: float | None,
        hot_n: int = 0,
        meanwhile: Callable[[], None] | None = None,
    ) -> UserReads:
        """The user's round trip: the packed user record and the recent lists of the
        given communities (one MGET), the newest seen posts, the blocked authors, the
        live graph and the moderators' rules counter, and per community the top `hot_n`
        of its hot list. `meanwhile` runs after the commands are sent and before their
        replies are read: work that needs no Redis overlaps Redis' (not against a
        cluster, whose transport reads each node's replies as it sends: it runs first)."""
        keys = [contract.user_key(version, user_id)] + [contract.recent_key(version, c) for c in community_ids]
        commands = [
            ("MGET", *keys),
            ("ZREVRANGE", contract.seen_key(user_id), 0, contract.SEEN_READ_MAX - 1),
            ("SMEMBERS", contract.blocked_key(user_id)),
            ("HGETALL", contract.graph_key(user_id)),
            ("GET", contract.RULES_REV_KEY),
        ]
        commands += self._hot_commands(version, community_ids, hot_n)
        pending = self.send("user", commands, deadline)
        if meanwhile is not None:
            try:
                meanwhile()
            except BaseException:
                if pending is not None:
                    pending.abandon()
                raise
        replies = self.finish(pending) if pending is not None else self.round_trip("user", commands, deadline)
        values, seen, blocked, graph, rev, *hot = replies
        if isinstance(values, Exception):
            raise StoreUnavailable("error", f"user MGET: {values}")
        if isinstance(blocked, Exception) or len(blocked) > contract.BLOCKED_READ_MAX:
            blocked = None
        return UserReads(
            record=values[0],
            recent=list(values[1:]),
            seen=None if isinstance(seen, Exception) else seen,
            blocked=None if blocked is None else set(blocked),
            hot=_lists(hot, len(community_ids)),
            graph=graph,
            rules_rev=None if isinstance(rev, Exception) else rev,
        )

    def community_reads(
        self, version: str, community_ids: list[str], deadline: float | None, hot_n: int
    ) -> CommunityReads:
        """Recent and hot lists of communities the user's round trip could not know
        about (the live graph added them): one more round trip, only then."""
        commands = [("MGET", *[contract.recent_key(version, c) for c in community_ids])]
        commands += self._hot_commands(version, community_ids, hot_n)
        recent, *hot = self.round_trip("user", commands, deadline)
        if isinstance(recent, Exception):
            raise StoreUnavailable("error", f"community MGET: {recent}")
        return CommunityReads(recent=list(recent), hot=_lists(hot, len(community_ids)))

    def read_rules(self, now: float, deadline: float | None) -> RulesReads:
        """Every pin still in force and every cap (a worker's rules cache refreshes from this)."""
        rev, pins, caps = self.round_trip(
            "user",
            [
                ("GET", contract.RULES_REV_KEY),
                ("ZRANGEBYSCORE", contract.PINS_KEY, int(now), "+inf", "WITHSCORES"),
                ("HGETALL", contract.CAPS_KEY),
            ],
            deadline,
        )
        for reply in (rev, pins, caps):
            if isinstance(reply, Exception):
                raise StoreUnavailable("error", f"rules: {reply}")
        if pins and isinstance(pins[0], list):  # RESP3: [member, score] pairs
            pairs = [(m, float(t)) for m, t in pins]
        else:  # RESP2: member, score, member, score...
            pairs = [(m, float(t)) for m, t in zip(pins[::2], pins[1::2])]
        return RulesReads(rev=rev, pins=pairs, caps=_as_dict(caps))

    @staticmethod
    def _hot_commands(version: str, community_ids: list[str], hot_n: int) -> list[tuple]:
        if hot_n <= 0:
            return []
        return [("ZREVRANGE", contract.hot_key(version, c), 0, hot_n - 1) for c in community_ids]

    def read_post_records(self, version: str, post_ids: list[str], deadline: float | None = None) -> list[bytes | None]:
        """All candidates in one MGET of packed records (measured 10x faster than HMGETs)."""
        if not post_ids:
            return []
        if self.cluster is not None:  # split by slot there: the keys as a command
            prefix, suffix = contract.post_key_prefix(version), contract.POST_KEY_SUFFIX
            (values,) = self.round_trip("posts", [("MGET", *[prefix + p + suffix for p in post_ids])], deadline)
            return _post_values(values)
        packed, order = self._posts_mget(version, post_ids)
        (values,) = self.round_trip("posts", [packed], deadline)
        return in_order(_post_values(values), order)

    def send_post_records(self, version: str, post_ids: list[str], deadline: float | None = None) -> Pending | None:
        """The MGET of read_post_records sent now, its reply read by finish_post_records
        (None against a cluster: read_post_records then)."""
        if not post_ids or self.cluster is not None:
            return None
        packed, order = self._posts_mget(version, post_ids)
        pending = self.send("posts", [packed], deadline)
        pending.orders = [order]
        return pending

    def finish_post_records(
        self, pending: Pending, version: str, more_ids: list[str], deadline: float | None = None
    ) -> list[bytes | None]:
        """The records a send_post_records asked for, then those of more_ids (one more
        MGET on the same connection, in the same wait), as one list."""
        orders, more = list(pending.orders), []
        if more_ids:
            packed, order = self._posts_mget(version, more_ids)
            more, orders = [packed], orders + [order]
        values = []
        for reply, order in zip(self.finish(pending, more, deadline), orders):
            values += in_order(_post_values(reply), order)
        return values

    @staticmethod
    def _posts_mget(version: str, post_ids: list[str]) -> tuple[bytes, list[int] | None]:
        return pack_keys("MGET", contract.post_key_prefix(version), contract.POST_KEY_SUFFIX, post_ids)

    def current_version(self) -> str | None:
        (raw,) = self.round_trip("pointer", [("GET", contract.CURRENT_KEY)])
        if isinstance(raw, Exception):
            raise StoreUnavailable("error", f"pointer GET: {raw}")
        return raw.decode() if raw else None

    def poll_pointer(self, serving: str | None, witness: str | None = None) -> tuple[str | None, bool]:
        """(the current-version pointer, whether the `serving` version's data is still in
        Redis) in one round trip. The data is there while its published marker, or the
        `witness` key of the version (for versions published before the marker), is."""
        commands = [("GET", contract.CURRENT_KEY)]
        if serving:
            commands.append(("EXISTS", contract.published_key(serving), *([witness] if witness else [])))
        raw, *present = self.round_trip("pointer", commands)
        for reply in (raw, *present):
            if isinstance(reply, Exception):
                raise StoreUnavailable("error", f"pointer poll: {reply}")
        return (raw.decode() if raw else None), bool(present and present[0])

    def published_versions(self) -> list[str]:
        """The published history, newest first (the fallbacks when a bundle is refused)."""
        (raw,) = self.round_trip("pointer", [("LRANGE", contract.HISTORY_KEY, 0, -1)])
        if isinstance(raw, Exception):
            raise StoreUnavailable("error", f"history LRANGE: {raw}")
        return [v.decode() for v in raw]

    def ping(self) -> bool:
        try:
            if self.cluster is not None:  # every master answers (a dead one: not ready)
                return bool(self.client.ping(target_nodes=RedisCluster.PRIMARIES))
            return bool(self.client.ping())
        except (redis.exceptions.RedisError, OSError):
            return False

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
            return
        self.client.close()
        self.client.connection_pool.disconnect()
