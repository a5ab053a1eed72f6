"""python -m service: parse config, start Redis if none is configured, serve until SIGTERM.

With --workers N (N > 1) this process becomes a supervisor (service/workers.py): N server
processes share the gRPC port and this one serves /metrics for all of them.

Nothing here imports prometheus_client (directly or through service.app) before
PROMETHEUS_MULTIPROC_DIR is set: the library picks its mode at import time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import logging
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from core.embedded_redis import EmbeddedRedis, EmbeddedRedisError, free_port
from core.settings import redact_url
from service.config import Config, load_config
from service.stuck import STOP_SLACK_S, enable_stack_dumps, exit_if_stop_outlasts
from service.workers import Supervisor, serve_one, setup_logging, wait_for_signal

log = logging.getLogger("nichefeed")


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(argv)
    setup_logging(cfg)
    enable_stack_dumps()
    prom_dir = None
    if cfg.workers > 1:
        # Before anything imports prometheus_client, here and in the spawned workers.
        prom_dir = Path(tempfile.mkdtemp(prefix="nichefeed-prometheus-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom_dir)
        if cfg.grpc_port == 0:  # every worker must bind the same port
            import dataclasses

            cfg = dataclasses.replace(cfg, grpc_addr=f"{cfg.grpc_addr.rsplit(':', 1)[0]}:{free_port()}")
    embedded = None
    url = cfg.redis_url
    keeper_stop = threading.Event()
    try:
        if not url:
            embedded = EmbeddedRedis(cfg.var_dir / "redis").start()
            url = embedded.url
            threading.Thread(
                target=_keep_redis_alive, args=(embedded, keeper_stop), name="redis-keeper", daemon=True
            ).start()
    except (EmbeddedRedisError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if cfg.workers == 1:
            return _serve_single(cfg, url)
        return _serve_workers(cfg, url, prom_dir)
    finally:
        keeper_stop.set()
        if embedded:
            embedded.stop()
        if prom_dir:
            shutil.rmtree(prom_dir, ignore_errors=True)


def _keep_redis_alive(embedded: EmbeddedRedis, stop: threading.Event) -> None:
    """The private redis-server is ours to keep: if it dies, start it again on the same
    data (append-only file) and socket; the servers degrade meanwhile and recover alone."""
    while not stop.wait(0.5):
        if embedded.proc is not None and embedded.proc.poll() is not None and not stop.is_set():
            log.error("private redis-server exited with %s; restarting it", embedded.proc.returncode)
            try:
                embedded.start()
            except EmbeddedRedisError as exc:
                log.error("cannot restart the private redis-server: %s", exc)


def _serve_single(cfg: Config, url: str) -> int:
    def on_ready(version, error):
        if error:
            print(f"error: {error}", file=sys.stderr)
        else:
            print(
                f"nichefeed serving model {version} on {cfg.grpc_addr} "
                f"(metrics http://{cfg.metrics_addr}/metrics, redis {redact_url(url)})",
                flush=True,
            )

    return serve_one(cfg, url, reuse_port=False, metrics=True, on_ready=on_ready)


def _serve_workers(cfg: Config, url: str, prom_dir: Path) -> int:
    sup = Supervisor(cfg, url, prom_dir)
    try:
        version = sup.start()
    except Exception as exc:  # a worker could not start: its one-line reason
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"nichefeed serving model {version} on {cfg.grpc_addr} with {cfg.workers} workers "
        f"(metrics http://{cfg.metrics_addr}/metrics, redis {redact_url(url)})",
        flush=True,
    )
    wait_for_signal()
    # The workers drain in parallel; the supervisor waits up to 10 s more for each (Supervisor.stop).
    exit_if_stop_outlasts(cfg.drain_notice_s + cfg.drain_s + 10.0 + STOP_SLACK_S)
    print("draining in-flight requests", flush=True)
    sup.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
