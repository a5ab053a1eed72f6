"""Every Prometheus collector of the service, under the `nichefeed_` namespace.

Label values are bound once where they are fixed (per stage, per op): observing a bound
child costs ~2 us, looking labels up per call ~5 us, on every request.
"""

from __future__ import annotations

import contextlib
import time

from prometheus_client import Counter, Gauge, Histogram

from service.workers import WORKER_RESTARTS, WORKER_RESTARTS_HELP

NS = "nichefeed"
# Rank latency on this machine is ~1-20 ms; buckets resolve that range finely.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
STAGE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5)


class Children(dict):
    """A labelled metric's children by label values (a value, or a tuple of them in the
    metric's label order), each looked up once: for label values that are not fixed where
    the metric is used, but few (variants, codes, filter reasons). Two threads creating
    the same child get the same one (labels() is idempotent)."""

    def __init__(self, metric):
        super().__init__()
        self.metric = metric

    def __missing__(self, key):
        child = self[key] = self.metric.labels(*key) if isinstance(key, tuple) else self.metric.labels(key)
        return child


class Metrics:
    def __init__(self) -> None:
        self.requests = Counter(f"{NS}_requests_total", "RPCs handled, by method and status code", ["method", "code"])
        self.latency = Histogram(
            f"{NS}_request_latency_seconds", "RPC latency end to end in the server", ["method"], buckets=LATENCY_BUCKETS
        )
        self.stage_latency = Histogram(
            f"{NS}_stage_latency_seconds", "Rank pipeline time per stage", ["stage"], buckets=STAGE_BUCKETS
        )
        self.stage_candidates = Counter(
            f"{NS}_stage_candidates_total", "Candidates leaving each pipeline stage", ["stage"]
        )
        self.filtered = Counter(f"{NS}_filtered_total", "Candidates removed by filters, by reason", ["reason"])
        self.fallbacks = Counter(f"{NS}_fallbacks_total", "Requests answered in degraded mode, by reason", ["reason"])
        self.redis_latency = Histogram(
            f"{NS}_redis_latency_seconds", "Redis call latency", ["op"], buckets=STAGE_BUCKETS
        )
        self.redis_errors = Counter(f"{NS}_redis_errors_total", "Redis calls that failed or timed out", ["op"])
        self.model_info = Gauge(
            f"{NS}_model_info", "The model version serving (value 1)", ["version"], multiprocess_mode="livemax"
        )
        self.model_created = Gauge(
            f"{NS}_model_created_timestamp_seconds", "When the serving model was trained", multiprocess_mode="livemax"
        )
        # What the serving model scores with, and what evaluates its trees (c, numpy,
        # lightgbm; none without trees): a worker whose install could not compile the
        # trees' kernel scores them in numpy at ~2.5x their CPU, and shows it here.
        self.model_scorer = Gauge(
            f"{NS}_model_scorer_info",
            "The serving model's scorer and its trees' evaluator (value 1)",
            ["scorer", "trees"],
            multiprocess_mode="livemax",
        )
        self._scorer_labels: tuple[str, str] | None = None
        self.index_size = Gauge(f"{NS}_index_posts", "Posts in the retrieval index", multiprocess_mode="livemax")
        self.reloads = Counter(f"{NS}_model_reloads_total", "Model reload attempts, by outcome", ["outcome"])
        # Hot path health (issue 4): degraded answers, Redis reachability, live workers.
        self.degraded = Counter(
            f"{NS}_degraded_responses_total",
            "Rank answers built from memory because Redis could not be read (public posts only)",
        )
        self.redis_up = Gauge(
            f"{NS}_redis_up", "1 while Redis answers, 0 while the circuit breaker is open", multiprocess_mode="livemin"
        )
        self.rank_slot_wait = Histogram(
            f"{NS}_rank_slot_wait_seconds",
            "Time a Rank call waited for one of its worker's ranking slots (--rank-slots) before ranking",
            buckets=STAGE_BUCKETS,
        )
        # Thread CPU, not wall time: what a Rank call's pipeline itself costs the process's
        # cores (waiting for Redis and for the interpreter lock costs nothing here). The
        # process's CPU per call minus this is the gRPC layer's share (benchmarks/README.md).
        self.rank_pipeline_cpu = Histogram(
            f"{NS}_rank_pipeline_cpu_seconds",
            "Thread CPU time of one Rank call's pipeline (not gRPC, queueing, or waiting for Redis)",
            buckets=STAGE_BUCKETS,
        )
        self.in_flight = Gauge(
            f"{NS}_requests_in_flight", "Rank requests being handled now", multiprocess_mode="livesum"
        )
        self.model_refused = Gauge(
            f"{NS}_model_refused",
            "1 while the current-version pointer names a bundle this server refused",
            multiprocess_mode="livemax",
        )
        self.model_fallbacks = Counter(
            f"{NS}_model_fallbacks",
            "Starts that serve the last good version because the current pointer's bundle cannot be served",
        )
        # Incremented by the --workers supervisor only (service/workers.py, which must not
        # import this module); exported by every process so the series always exists.
        self.serving_data_missing = Gauge(
            f"{NS}_serving_data_missing",
            "1 while Redis has lost the serving model's data (emptied): degraded answers, writes refused",
            multiprocess_mode="livemax",
        )
        self.worker_restarts = Counter(WORKER_RESTARTS, WORKER_RESTARTS_HELP)
        self.worker_up = Gauge(
            f"{NS}_worker_up", "1 per live server process (pid label under --workers)", multiprocess_mode="liveall"
        )
        # Write path (service/writes/, service/live_index.py)
        self.writes = Counter(f"{NS}_write_events_total", "Write events, by kind and outcome", ["kind", "outcome"])
        self.write_latency = Histogram(
            f"{NS}_write_latency_seconds", "Write RPC latency, by method", ["method"], buckets=LATENCY_BUCKETS
        )
        self.live_index_size = Gauge(
            f"{NS}_live_index_posts", "Posts in the live (fresh-post) index", multiprocess_mode="livemax"
        )
        self.event_log_length = Gauge(
            f"{NS}_event_log_pending",
            "Accepted events in the log not yet folded into training data",
            multiprocess_mode="livemax",
        )
        # Experiments (service/experiments.py, shadow.py, served.py): variant = control |
        # candidate while one runs, none otherwise.
        self.variant_requests = Counter(
            f"{NS}_variant_requests_total", "Rank calls by experiment variant and status code", ["variant", "code"]
        )
        self.variant_latency = Histogram(
            f"{NS}_variant_latency_seconds", "Rank latency by experiment variant", ["variant"], buckets=LATENCY_BUCKETS
        )
        self.variant_degraded = Counter(
            f"{NS}_variant_degraded_total", "Rank answers built from memory, by experiment variant", ["variant"]
        )
        self.variant_filtered = Counter(
            f"{NS}_variant_filtered_total", "Candidates removed by filters, by experiment variant", ["variant"]
        )
        self.variant_items = Counter(
            f"{NS}_variant_served_items_total", "Posts served, by experiment variant", ["variant"]
        )
        self.experiment_share = Gauge(
            f"{NS}_experiment_share",
            "Percent of users the running experiment's candidate serves (by control and candidate version)",
            ["control", "candidate"],
            multiprocess_mode="livemax",
        )
        self.experiment_auto_stops = Counter(
            f"{NS}_experiment_auto_stops_total",
            "Experiments stopped because the candidate's error or degraded rate exceeded control's, by rate",
            ["rate"],
        )
        self.experiment_refused = Gauge(
            f"{NS}_experiment_candidate_refused",
            "1 while the running experiment's candidate bundle cannot be loaded (everyone gets control)",
            multiprocess_mode="livemax",
        )
        self.served_records = Counter(
            f"{NS}_experiment_served_records_total",
            "Answers remembered for engagement attribution, by outcome (written | dropped | failed)",
            ["outcome"],
        )
        self.shadow_runs = Counter(
            f"{NS}_shadow_runs_total",
            "Shadow rankings by the candidate, by outcome (scored | dropped | failed)",
            ["outcome"],
        )
        self.shadow_overlap = Histogram(
            f"{NS}_shadow_overlap",
            "overlap@20: share of the served top 20 the candidate would also have put in its top 20",
            buckets=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
        )
        self.shadow_rank_correlation = Histogram(
            f"{NS}_shadow_rank_correlation",
            "Spearman correlation of the ranks of posts in both top 20s (served and candidate)",
            buckets=(-0.5, 0.0, 0.25, 0.5, 0.75, 0.9, 1.0),
        )
        self.shadow_cpu = Histogram(
            f"{NS}_shadow_cpu_seconds", "CPU time of one shadow ranking (its own thread)", buckets=STAGE_BUCKETS
        )

    def set_model(
        self, version: str, created_at: str, index_size: int, previous: str | None, scorer: tuple[str, str]
    ) -> None:
        switch_info(self.model_info, (previous,) if previous else None, (version,))
        switch_info(self.model_scorer, self._scorer_labels, scorer)
        self._scorer_labels = scorer
        try:
            ts = time.mktime(time.strptime(created_at, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        except ValueError:
            ts = 0
        self.model_created.set(ts)
        self.index_size.set(index_size)


def switch_info(gauge: Gauge, old: tuple[str, ...] | None, new: tuple[str, ...]) -> None:
    """An info gauge's 1 moved from the `old` label values to the `new` ones. Under
    --workers the value lives in a shared file that remove() leaves behind: the old
    labels are zeroed first, so only what some live worker serves reads 1."""
    if old is not None and old != new:
        gauge.labels(*old).set(0)
        with contextlib.suppress(KeyError):
            gauge.remove(*old)
    gauge.labels(*new).set(1)


METRICS = Metrics()
