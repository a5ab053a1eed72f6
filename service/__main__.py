"""python -m service: parse config, start Redis if none is configured, serve until SIGTERM."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import logging
import signal
import sys
import threading

from service.app import Service, StartupError
from service.config import load_config
from service.embedded_redis import EmbeddedRedis, EmbeddedRedisError


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(argv)
    logging.basicConfig(level=cfg.log_level.upper(),
                        format='{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}')
    embedded = None
    url = cfg.redis_url
    try:
        if not url:
            embedded = EmbeddedRedis(cfg.var_dir / "redis").start()
            url = embedded.url
        service = Service(cfg, url).start()
    except (StartupError, EmbeddedRedisError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if embedded:
            embedded.stop()
        return 2
    print(f"nichefeed serving model {service.holder.current.version} on {cfg.grpc_addr} "
          f"(metrics http://{cfg.metrics_addr}/metrics, redis {url})", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("draining in-flight requests", flush=True)
    service.stop(grace=5.0)
    if embedded:
        embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
