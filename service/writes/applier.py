"""WriteApplier: runs a batch of any kind (batches.py) against the serving bundle and Redis.

validate -> one read round trip -> one Lua script -> finish. Redis transport failures
become Unavailable (the client retries with the same event ids: the idempotency markers
make that safe), so nothing above this module knows Redis. Against a Redis Cluster the
script runs once per slot group (service/writes/cluster.py says what stays atomic).
"""

from __future__ import annotations

import logging

import redis

from core import contract
from core.bundle import Bundle
from core.redis_conn import is_cluster
from service.cluster_transport import ClusterTransport, NodeFailure
from service.errors import InvalidArgument, Unavailable
from service.reload import BundleHolder, data_missing_message
from service.store import CircuitBreaker
from service.writes.batches import EngagementBatch, PostBatch
from service.writes.cluster import ClusterBatchRunner
from service.writes.graph import GraphBatch, RuleBatch

log = logging.getLogger("nichefeed.writes")
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError, NodeFailure)


class WriteApplier:
    def __init__(
        self, holder: BundleHolder, client: redis.Redis, experiments=None, wait_replicas: int = 1, wait_ms: int = 500
    ):
        self.holder = holder
        self.client = client
        self.experiments = experiments  # service/experiments.py: a candidate version kept in step with posts
        self.posts = PostBatch(self._candidate)
        self.engagements = EngagementBatch(client, candidate=self._candidate)
        self.graph = GraphBatch()
        self.rules = RuleBatch()
        self._scripts = {
            b.kind: client.register_script(b.script) for b in (self.posts, self.engagements, self.graph, self.rules)
        }
        self.cluster = None
        if is_cluster(client):
            timeout_s = client.get_default_node().redis_connection.connection_pool.connection_kwargs.get(
                "socket_timeout", 2.0
            )
            transport = ClusterTransport(client, CircuitBreaker)
            self.cluster = ClusterBatchRunner(transport, timeout_s, contract.APPLIED_TTL_S, wait_replicas, wait_ms)

    def _candidate(self, bundle: Bundle) -> Bundle | None:
        """The running experiment's candidate, while `bundle` is its control."""
        running = self.experiments.running if self.experiments is not None else None
        if running is None or running.candidate is None or running.defn.control != bundle.version:
            return None
        return running.candidate

    def _bundle(self) -> Bundle:
        bundle = self.holder.current
        if bundle is None:
            raise Unavailable("no model loaded yet")
        if self.holder.data_missing:  # Redis came back empty: retryable, not the client's mistake
            raise Unavailable(self.holder.data_missing)
        return bundle

    def apply(self, batch, events, now: float, offset: int = 0) -> tuple[int, int]:
        """(applied, duplicates) of one all-or-nothing batch; `offset` is the index of its
        first event in the caller's request (a stream), for the errors' events[i]."""
        bundle = self._bundle()
        batch.validate(bundle, events, now, offset)
        if not events:
            return 0, 0
        try:
            replies = self._read(batch.reads(bundle, events))
            try:
                keys, argv = batch.script_args(bundle, events, replies, now, offset)
            except InvalidArgument:
                # "unknown post" before the reloader noticed that Redis lost the data.
                if not self.client.exists(contract.published_key(bundle.version)):
                    raise Unavailable(data_missing_message(bundle.version)) from None
                raise
            if self.cluster is not None:
                reply = self.cluster.run(batch.kind, keys, argv)
            else:
                reply = self._scripts[batch.kind](keys=keys, args=argv)
            return batch.finish(bundle, reply, events, offset)
        except REDIS_ERRORS as exc:
            log.warning("write batch (%s) not applied: %s", batch.kind, exc)
            raise Unavailable(
                f"feature store unavailable ({exc.__class__.__name__}); retry with the same event ids"
            ) from exc

    def _read(self, commands: list[tuple]) -> list:
        """The batch's one read round trip (in a cluster: one per node, at once)."""
        if self.cluster is not None:
            replies = self.cluster.transport.round_trip(commands, self.cluster.timeout_s)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return replies
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute()

    def write_posts(self, events, now: float) -> tuple[int, int]:
        return self.apply(self.posts, events, now)

    def write_engagements(self, events, now: float, offset: int = 0) -> tuple[int, int]:
        return self.apply(self.engagements, events, now, offset)

    def write_graph(self, events, now: float) -> tuple[int, int]:
        return self.apply(self.graph, events, now)

    def write_rules(self, events, now: float) -> tuple[int, int]:
        return self.apply(self.rules, events, now)
