"""Assemble a running service from a Config: store, bundle, pipeline, server, reloader.

__main__ and the tests both start the service through Service, so what the tests run is
what `make serve` runs.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one FAISS thread per request: see DESIGN "Performance"

import logging
from pathlib import Path

from prometheus_client import start_http_server

from service.bundle import BundleHolder
from service.config import Config, redis_address
from service.pipeline import RankPipeline
from service.reload import ModelReloader
from service.server import FeedRankerServicer, build_server, make_clock, set_serving
from service.stages import default_stages
from service.store import FeatureStore, StoreUnavailable

log = logging.getLogger("nichefeed")


class StartupError(RuntimeError):
    """The service cannot start; the message is one line meant for the operator."""


class Service:
    def __init__(self, cfg: Config, redis_url: str, reuse_port: bool = False):
        self.cfg = cfg
        self.store = FeatureStore(redis_url, timeout_ms=cfg.redis_timeout_ms, max_connections=cfg.threads * 2 + 4)
        where = redis_address(redis_url)
        if not self.store.ping():
            raise StartupError(f"cannot reach Redis at {where} (set NICHEFEED_REDIS_URL, or unset it for a private redis-server)")
        try:
            version = self.store.current_version()
        except StoreUnavailable as exc:
            raise StartupError(f"cannot read the current model version from Redis at {where}: {exc}") from None
        if not version:
            raise StartupError(f"no model published in Redis at {where} (run make publish)")
        self.holder = BundleHolder()
        self.reloader = ModelReloader(self.holder, self.store, Path(cfg.models_dir), cfg.reload_interval_s)
        if not self.reloader.load(version):
            raise StartupError(f"model {version} in {cfg.models_dir} cannot be served (see the error above)")
        self.pipeline = RankPipeline(default_stages(cfg, self.store))
        self.servicer = FeedRankerServicer(self.pipeline, self.holder, make_clock(cfg))
        self.server, self.port, self.health = build_server(cfg, self.servicer, reuse_port=reuse_port)

    def start(self, metrics: bool = True) -> "Service":
        if metrics and self.cfg.metrics_addr:
            host, port = self.cfg.metrics_addr.rsplit(":", 1)
            start_http_server(int(port), addr=host)
        self.server.start()
        set_serving(self.health, True)
        self.reloader.start()
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop taking requests, let in-flight ones finish (up to `grace` s), then close."""
        set_serving(self.health, False)
        self.reloader.stop()
        self.server.stop(grace).wait()
        self.store.close()
