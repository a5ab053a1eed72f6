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

    def set_model(self, version: str, created_at: str, index_size: int, previous: str | None) -> None:
        if previous and previous != version:
            # Under --workers the value lives in a shared file that remove() leaves behind:
            # zero it first so only the versions some live worker serves read 1.
            self.model_info.labels(version=previous).set(0)
            with contextlib.suppress(KeyError):
                self.model_info.remove(previous)
        self.model_info.labels(version=version).set(1)
        try:
            ts = time.mktime(time.strptime(created_at, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        except ValueError:
            ts = 0
        self.model_created.set(ts)
        self.index_size.set(index_size)


METRICS = Metrics()
