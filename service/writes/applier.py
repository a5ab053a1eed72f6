"""WriteApplier: runs a batch of any kind (batches.py) against the serving bundle and Redis.

validate -> one read round trip -> one Lua script -> finish. Redis transport failures
become Unavailable (the client retries with the same event ids: the idempotency markers
make that safe), so nothing above this module knows Redis.
"""

from __future__ import annotations

import redis

from core import contract
from core.bundle import Bundle
from service.errors import InvalidArgument, Unavailable
from service.reload import BundleHolder, data_missing_message
from service.writes.batches import EngagementBatch, PostBatch
from service.writes.graph import GraphBatch, RuleBatch

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class WriteApplier:
    def __init__(self, holder: BundleHolder, client: redis.Redis, experiments=None):
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
            pipe = self.client.pipeline(transaction=False)
            for command in batch.reads(bundle, events):
                pipe.execute_command(*command)
            replies = pipe.execute()
            try:
                keys, argv = batch.script_args(bundle, events, replies, now, offset)
            except InvalidArgument:
                # "unknown post" before the reloader noticed that Redis lost the data.
                if not self.client.exists(contract.published_key(bundle.version)):
                    raise Unavailable(data_missing_message(bundle.version)) from None
                raise
            reply = self._scripts[batch.kind](keys=keys, args=argv)
            return batch.finish(bundle, reply, events, offset)
        except REDIS_ERRORS as exc:
            raise Unavailable(
                f"feature store unavailable ({exc.__class__.__name__}); retry with the same event ids"
            ) from exc

    def write_posts(self, events, now: float) -> tuple[int, int]:
        return self.apply(self.posts, events, now)

    def write_engagements(self, events, now: float, offset: int = 0) -> tuple[int, int]:
        return self.apply(self.engagements, events, now, offset)

    def write_graph(self, events, now: float) -> tuple[int, int]:
        return self.apply(self.graph, events, now)

    def write_rules(self, events, now: float) -> tuple[int, int]:
        return self.apply(self.rules, events, now)
