"""Shadow mode: rank a sample of control answers with the candidate too, unserved.

For a sampled request the candidate's bundle runs the same stages (the same Redis reads,
filters and privacy rules) on one background thread, after the answer has left, and
how far its top 20 is from the one served is recorded: overlap@20 (the share of the
served top 20 it also chose) and the Spearman correlation of the ranks of the posts both
chose. The cost is bounded by the experiment's shadow_rate (the share of control
answers sampled) and by one thread with one request waiting at most: a sample that
arrives while the thread is busy is dropped (counted), never queued behind the others,
so the shadow can take at most one core's share and never the request's time.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import random
import threading
import time

import numpy as np

from service.errors import ServiceError
from service.experiments import ExperimentHolder
from service.metrics import METRICS
from service.pipeline import RankContext, RankQuery

log = logging.getLogger("nichefeed.shadow")

TOP = 20


def compare(served: list[str], shadow: list[str], k: int = TOP) -> tuple[float, float | None] | None:
    """(overlap@k, Spearman rank correlation over the posts in both top k) or None when
    either list is empty; the correlation is None when fewer than two posts are shared."""
    n = min(k, len(served), len(shadow))
    if n == 0:
        return None
    a, b = served[:n], shadow[:n]
    pos_b = {p: i for i, p in enumerate(b)}
    common = [p for p in a if p in pos_b]
    overlap = len(common) / n
    if len(common) < 2:
        return overlap, None
    # Ranks within the shared posts: the order each list gives them.
    ra = np.arange(len(common), dtype=np.float64)
    rb = np.argsort(np.argsort([pos_b[p] for p in common])).astype(np.float64)
    if np.array_equal(ra, rb):
        return overlap, 1.0
    return overlap, float(np.corrcoef(ra, rb)[0, 1])


class ShadowRanker:
    def __init__(self, stages: list, experiments: ExperimentHolder, clock, live_for, rng: random.Random | None = None):
        self.stages = stages  # the serving pipeline's stage objects (shared caches, same rules)
        self.experiments = experiments
        self.clock = clock
        self.live_for = live_for
        self.rng = rng or random.Random()
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._dropped = METRICS.shadow_runs.labels(outcome="dropped")
        self._scored = METRICS.shadow_runs.labels(outcome="scored")
        self._failed = METRICS.shadow_runs.labels(outcome="failed")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shadow-ranker", daemon=True)

    def maybe_submit(self, query: RankQuery, served: list[str]) -> None:
        """Called for a control answer: sample it at the experiment's shadow rate."""
        defn = self.experiments.definition()
        if defn is None or defn.shadow_rate <= 0 or self.rng.random() >= defn.shadow_rate:
            return
        try:
            self._queue.put_nowait((defn.id, query, served))
        except queue.Full:
            self._dropped.inc()

    def run_one(self, experiment_id: str, query: RankQuery, served: list[str]) -> tuple[float, float | None] | None:
        """Rank `query` with the candidate and record how it differs from `served`."""
        running = self.experiments.running
        if running is None or running.candidate is None or running.defn.id != experiment_id:
            return None  # the experiment ended while this waited
        bundle = running.candidate
        t0 = time.thread_time()
        ctx = RankContext(
            query=dataclasses.replace(query, limit=max(query.limit, TOP), explain=False),
            bundle=bundle,
            now=self.clock(bundle),
            live=self.live_for(bundle.version),
        )
        for stage in self.stages:  # not RankPipeline.run: the serving stage metrics stay the served ones
            stage.run(ctx)
        METRICS.shadow_cpu.observe(time.thread_time() - t0)
        result = compare(served, [item.post_id for item in ctx.items])
        if result is not None:
            overlap, rho = result
            METRICS.shadow_overlap.observe(overlap)
            if rho is not None:
                METRICS.shadow_rank_correlation.observe(rho)
        self._scored.inc()
        return result

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until the waiting sample (if any) is done (tests)."""
        end = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.005)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.run_one(*job)
            except ServiceError:
                self._failed.inc()  # e.g. the user is unknown to the candidate
            except Exception:
                self._failed.inc()
                log.exception("shadow ranking failed")
            finally:
                self._queue.task_done()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
