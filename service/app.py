"""Assemble a running service from a Config: store, bundle, pipeline, server, reloader.

__main__ and the tests both start the service through Service, so what the tests run is
what `make serve` runs.
"""

from __future__ import annotations

import os

os.environ.setdefault(
    "OMP_NUM_THREADS", "1"
)  # one FAISS thread per request: a single query gains nothing from more (docs/serving.md)

import logging
import time
from pathlib import Path

from prometheus_client import start_http_server

from core.redis_conn import connect
from core.settings import redis_address
from service.api.rank import FeedRankerServicer
from service.api.writes import FeedWriterServicer
from service.config import Config
from service.experiments import ExperimentFollower, ExperimentHolder
from service.live_index import LiveIndexFollower
from service.metrics import METRICS
from service.pipeline import RankPipeline
from service.reload import BundleHolder, ModelReloader
from service.security import SecurityConfigError
from service.served import ServedRecorder
from service.server import build_server, make_clock, set_serving
from service.shadow import ShadowRanker
from service.stages import default_stages
from service.store import FeatureStore, StoreUnavailable
from service.writes import WriteApplier

log = logging.getLogger("nichefeed")


class StartupError(RuntimeError):
    """The service cannot start; the message is one line meant for the operator."""


class Service:
    def __init__(self, cfg: Config, redis_url: str, reuse_port: bool = False):
        self.cfg = cfg
        self.store = FeatureStore(
            redis_url,
            timeout_ms=cfg.redis_timeout_ms,
            max_connections=cfg.threads * 2 + 4,
            max_budget_s=cfg.redis_max_budget_ms / 1000,
        )
        where = redis_address(redis_url)
        if not self.store.ping():
            raise StartupError(
                f"cannot reach Redis at {where} (set NICHEFEED_REDIS_URL, or unset it for a private redis-server)"
            )
        try:
            version = self.store.current_version()
        except StoreUnavailable as exc:
            raise StartupError(f"cannot read the current model version from Redis at {where}: {exc}") from None
        if not version:
            raise StartupError(f"no model published in Redis at {where} (run make publish)")
        self.holder = BundleHolder()
        self.reloader = ModelReloader(self.holder, self.store, Path(cfg.models_dir), cfg.reload_interval_s)
        try:
            published = self.store.published_versions()
        except StoreUnavailable:
            published = []
        if not self.reloader.load_or_last_good(version, published):
            raise StartupError(f"model {version} in {cfg.models_dir} cannot be served (see the error above)")
        self.pipeline = RankPipeline(default_stages(cfg, self.store))
        # The write path and the live index use their own client: writes wait for Redis'
        # fsync, which must not eat into the hot path's short timeouts and pool.
        self.write_client = connect(
            redis_url,
            socket_timeout=cfg.write_timeout_ms / 1000,
            socket_connect_timeout=1.0,
            max_connections=cfg.threads + 4,
        )
        self.live = LiveIndexFollower(self.holder, self.write_client, interval_s=cfg.live_poll_s)
        # An experiment's candidate: its bundle beside the control's, its own live index,
        # the answers remembered for attribution, the shadow sampler (service/experiments.py).
        self.experiments = ExperimentHolder()
        self.reloader.followers.append(ExperimentFollower(self.experiments, self.store, Path(cfg.models_dir)))
        self.candidate_live = LiveIndexFollower(self.experiments, self.write_client, interval_s=cfg.live_poll_s)
        clock = make_clock(cfg)
        self.served = ServedRecorder(self.write_client)
        self.shadow = ShadowRanker(self.pipeline.stages, self.experiments, clock, self.live_for)
        self.servicer = FeedRankerServicer(
            self.pipeline,
            self.holder,
            clock,
            live_for=self.live_for,
            experiments=self.experiments,
            served=self.served,
            shadow=self.shadow,
            rank_slots=min(cfg.rank_slots, cfg.threads),  # more slots than threads would never fill
        )
        self.writer = FeedWriterServicer(
            WriteApplier(self.holder, self.write_client, self.experiments, cfg.redis_wait_replicas, cfg.redis_wait_ms)
        )
        try:
            self.server, self.port, self.health = build_server(
                cfg, self.servicer, reuse_port=reuse_port, writer=self.writer
            )
        except SecurityConfigError as exc:
            self.store.close()
            raise StartupError(str(exc)) from None

    def live_for(self, version: str):
        """The live index of `version`: the control's or the experiment candidate's.

        Compared with None, never by truth: a LiveIndex's len() counts its post vectors,
        and one holding only deletions and visibility changes (a version's first writes)
        is 0, yet it is what keeps those posts out of a degraded feed."""
        index = self.live.index_for(version)
        return index if index is not None else self.candidate_live.index_for(version)

    def start(self, metrics: bool = True) -> Service:
        if metrics and self.cfg.metrics_addr:
            host, port = self.cfg.metrics_addr.rsplit(":", 1)
            start_http_server(int(port), addr=host)
        self.reloader.poll()  # a running experiment is routed from the first request
        self.live.start()  # replays the live stream before the first request is served
        self.candidate_live.start()
        self.served.start()
        self.shadow.start()
        self.server.start()
        METRICS.worker_up.set(1)
        set_serving(self.health, True)
        self.reloader.start()
        return self

    def stop(self, grace: float = 5.0, notice_s: float = 0.0) -> None:
        """Say NOT_SERVING and keep answering for notice_s, then stop taking requests, let
        in-flight ones finish (up to `grace` s), and close.

        The notice is for clients that balance over replicas with health checking
        (core/balancing.py): they stop sending here when the health Watch says NOT_SERVING,
        but calls they sent before hearing it still arrive, and gRPC cancels a call that
        reaches a server already stopping. Once stopping, nothing sets SERVING again."""
        self.health.enter_graceful_shutdown()
        if notice_s > 0:
            time.sleep(notice_s)
        self.reloader.stop()
        if not self.server.stop(grace).wait(grace + 5.0):
            log.error("the gRPC server had not stopped %.0fs after its grace; closing the rest anyway", 5.0)
        self.served.stop()  # answers already given are still remembered
        self.shadow.stop()
        self.live.stop()
        self.candidate_live.stop()
        self.store.close()
        self.write_client.close()
