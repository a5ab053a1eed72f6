"""One round trip to each Redis Cluster node a list of commands touches, all at once.

The store's reads and the write path's scripts are lists of commands written for one
node. Here each command goes to the master of its key's slot: a multi-key MGET is split
by slot (one MGET per slot, grouped by node) and its values put back in key order, and
an EXISTS of several keys is one EXISTS a key, summed, and every other command routes
by its first key (EVAL/EVALSHA: the first of KEYS). Every
node's commands are written first, then every node's replies read: the round trip
costs the slowest node's time, not the sum.

A node that fails (refused, timed out, or answering MOVED/ASK/CLUSTERDOWN because the
layout changed) fails the whole call with NodeFailure, and the layout is re-read in the
background (at most every REFRESH_EVERY_S): after a failover the promoted replica is
found without a request waiting for it. Each node has its own circuit breaker, so a
dead master costs its own requests a fast failure and nobody else anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

import hiredis
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

log = logging.getLogger("nichefeed.cluster")

REFRESH_EVERY_S = 0.25
_TRANSPORT_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
# Replies meaning "this slot is not served here (any more)": the layout must be re-read.
_LAYOUT_ERRORS = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)


class NodeFailure(RuntimeError):
    """A node did not answer (or no longer serves the slot): `timeout` or `error`."""

    def __init__(self, reason: str, node: str, detail: str):
        super().__init__(f"{node}: {detail}")
        self.reason = reason
        self.node = node


def _key_of(command: tuple):
    name = command[0].upper() if isinstance(command[0], str) else command[0].decode().upper()
    if name in ("EVAL", "EVALSHA", "FCALL"):
        return command[3] if int(command[2]) > 0 else None
    return command[1] if len(command) > 1 else None


class ClusterTransport:
    def __init__(self, client: RedisCluster, breaker_factory):
        self.client = client
        self._breakers: dict[str, object] = {}
        self._breaker_factory = breaker_factory
        self._lock = threading.Lock()
        self._refresh_wanted = threading.Event()
        self._last_refresh = 0.0
        self._closed = False
        self._refresher = threading.Thread(target=self._refresh_loop, name="cluster-layout", daemon=True)
        self._refresher.start()

    # -- layout ------------------------------------------------------------------------

    def node_for(self, key, slots: dict | None = None) -> object:
        """The master serving `key`'s slot, as the client last read the layout."""
        return self._primary(
            key_slot(_as_bytes(key)), self.client.nodes_manager.slots_cache if slots is None else slots
        )

    def _primary(self, slot: int, slots: dict) -> object:
        """The master of `slot` in `slots`, the client's slot table (a re-read replaces it
        whole, so one plan reads one layout). Not redis-py's get_node_from_slot: its lock
        and argument-deprecation wrapper per call were a quarter of the time of a 500-post
        MGET split by slot. A slot no known node serves fails like a dead node."""
        nodes = slots.get(slot)
        if not nodes:
            self.stale()
            raise NodeFailure("error", f"slot {slot}", "no known node serves the slot")
        return nodes[0]

    def stale(self) -> None:
        """The layout may have changed: re-read it soon, off the request's thread."""
        self._refresh_wanted.set()

    def _refresh_loop(self) -> None:
        while not self._closed:
            self._refresh_wanted.wait(timeout=1.0)
            if self._closed:
                return
            if not self._refresh_wanted.is_set():
                continue
            wait = self._last_refresh + REFRESH_EVERY_S - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._refresh_wanted.clear()
            self._last_refresh = time.monotonic()
            try:
                self.client.nodes_manager.initialize()
            except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError) as exc:
                log.warning("cluster layout not re-read: %s", exc)
                self._refresh_wanted.set()  # try again after REFRESH_EVERY_S

    def breaker(self, node_name: str):
        b = self._breakers.get(node_name)
        if b is None:
            with self._lock:
                b = self._breakers.setdefault(node_name, self._breaker_factory())
        return b

    # -- the round trip ----------------------------------------------------------------

    def plan(self, commands: list[tuple]) -> tuple[dict, list]:
        """Per node (by name): [node, [sub-commands]]; and per command how to rebuild its
        reply: ("one", node, index) or ("mget", n keys, [(node, index, positions)])."""
        per_node: dict[str, list] = {}
        rebuild: list = []
        slots = self.client.nodes_manager.slots_cache

        def add(node, command) -> int:
            entry = per_node.get(node.name)
            if entry is None:
                entry = per_node[node.name] = [node, []]
            entry[1].append(command)
            return len(entry[1]) - 1

        for command in commands:
            name = command[0].upper() if isinstance(command[0], str) else command[0]
            if name == "MGET" and len(command) > 2:
                by_slot: dict[int, list[int]] = defaultdict(list)
                keys = command[1:]
                for pos, key in enumerate(keys):
                    by_slot[key_slot(_as_bytes(key))].append(pos)
                parts = []
                for slot, positions in by_slot.items():
                    node = self._primary(slot, slots)
                    parts.append((node.name, add(node, ("MGET", *[keys[p] for p in positions])), positions))
                rebuild.append(("mget", len(keys), parts))
            elif name == "EXISTS" and len(command) > 2:  # keys of several slots: one EXISTS each, summed
                parts = [
                    (node.name, add(node, ("EXISTS", key)))
                    for key in command[1:]
                    for node in [self.node_for(key, slots)]
                ]
                rebuild.append(("sum", parts))
            else:
                key = _key_of(command)
                node = self.node_for(key, slots) if key is not None else self.client.get_random_node()
                rebuild.append(("one", node.name, add(node, command)))
        return per_node, rebuild

    def round_trip(self, commands: list[tuple], timeout: float, wait_replicas: int = 0, wait_ms: int = 0) -> list:
        """Every command's reply in order (a Redis error reply as its exception). With
        wait_replicas, each node's commands end with WAIT: NodeFailure unless every node
        had its writes acknowledged by that many replicas within wait_ms."""
        per_node, rebuild = self.plan(commands)
        for name, _ in per_node.items():
            if not self.breaker(name).allow():
                raise NodeFailure("circuit_open", name, "circuit open")
        end = time.monotonic() + timeout
        conns: dict[str, object] = {}
        replies: dict[str, list] = {}
        try:
            for name, (node, cmds) in per_node.items():
                pool = node.redis_connection.connection_pool
                conn = conns[name] = pool.get_connection()
                if wait_replicas:
                    cmds = cmds + [("WAIT", wait_replicas, wait_ms)]
                conn.send_packed_command([b"".join(map(hiredis.pack_command, cmds))], check_health=False)
                per_node[name][1] = cmds
            for name, (_node, cmds) in per_node.items():
                out = replies[name] = []
                conn = conns[name]
                for _ in cmds:
                    left = end - time.monotonic()
                    if left <= 0:
                        raise NodeFailure("timeout", name, "round trip budget spent")
                    try:
                        out.append(conn.read_response(timeout=left))
                    except _LAYOUT_ERRORS as exc:
                        self.stale()
                        raise NodeFailure("error", name, f"layout changed: {exc}") from exc
                    except redis.exceptions.ResponseError as exc:
                        out.append(exc)
                if wait_replicas and out[-1] < wait_replicas:
                    raise NodeFailure("error", name, f"WAIT: {out[-1]} of {wait_replicas} replicas acknowledged")
                self.breaker(name).success()
        except _TRANSPORT_ERRORS as exc:
            failed = next((n for n in per_node if n not in replies or len(replies[n]) < len(per_node[n][1])), "?")
            self._fail(conns, failed)
            reason = "timeout" if isinstance(exc, (redis.exceptions.TimeoutError, TimeoutError)) else "error"
            raise NodeFailure(reason, failed, f"{exc.__class__.__name__}: {exc}") from exc
        except NodeFailure as exc:
            self._fail(conns, exc.node)
            raise
        except BaseException:
            for conn in conns.values():
                conn.disconnect()
            raise
        finally:
            for name, conn in conns.items():
                per_node[name][0].redis_connection.connection_pool.release(conn)
        return [self._rebuild(r, replies) for r in rebuild]

    def _fail(self, conns: dict, failed: str) -> None:
        for conn in conns.values():
            conn.disconnect()  # unread replies must never reach the next request
        self.breaker(failed).failure()
        self.stale()

    @staticmethod
    def _rebuild(how, replies: dict):
        if how[0] == "one":
            return replies[how[1]][how[2]]
        if how[0] == "sum":
            values = [replies[name][index] for name, index in how[1]]
            failed = [v for v in values if isinstance(v, Exception)]
            return failed[0] if failed else sum(values)
        _, n, parts = how
        values: list = [None] * n
        for name, index, positions in parts:
            reply = replies[name][index]
            if isinstance(reply, Exception):
                return reply
            for pos, value in zip(positions, reply):
                values[pos] = value
        return values

    def close(self) -> None:
        self._closed = True
        self._refresh_wanted.set()
        self.client.close()


def _as_bytes(key) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode()
