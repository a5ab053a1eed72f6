"""Configuration: the only place that reads the environment and command-line flags.

Every setting has a flag and an environment variable (flag wins), with a default that
binds to loopback. See README "Configuration".
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from core.flags import add_flags, from_flags
from core.settings import ENV_PREFIX

MAX_LIMIT = 200  # largest RankRequest.limit (documented in the proto)
PIN_CPUS = ("auto", "true", "false")  # --pin-cpus (service/affinity.py)


@dataclass(frozen=True)
class Config:
    grpc_addr: str = "127.0.0.1:50051"
    metrics_addr: str = "127.0.0.1:9464"  # empty: no metrics endpoint
    redis_url: str = ""  # empty: start a private redis-server under var_dir
    models_dir: Path = Path("models")
    var_dir: Path = Path("var")
    workers: int = 1
    threads: int = 8  # gRPC handler threads per worker process
    # Rank calls that run their pipeline at once in a worker; the others wait their turn, in
    # the order they came (service/rank_slots.py).
    # A worker's Python holds one lock (the GIL): 8 calls ranking at once take turns on it
    # anyway and pay for the switches (1 process, 8 callers, 1M posts: 4.3-4.6 ms of
    # server CPU a call with no limit, 3.8-3.9 with 2 slots, 3.2-3.4 with 1, which costs
    # 2 processes 5-8% of their calls/s; benchmarks/README.md "Ranking slots"). Two let
    # one call's Redis round trip or FAISS search (they release the lock) overlap another's
    # Python. 0: as many as threads (and never more than threads). Streams and other RPCs
    # take no slot: they are never queued behind Rank.
    rank_slots: int = 2
    # Each server process on one CPU of its own (worker i on the i-th CPU it may use): the
    # ranking slots' handoffs of the GIL then stay in one CPU's cache (service/affinity.py).
    # auto: only when there are as many workers as CPUs (then two servers on one machine
    # still spread evenly over its CPUs); true: always; false: never.
    pin_cpus: str = "auto"
    candidates: int = 500  # candidates retrieved per request
    max_limit: int = MAX_LIMIT
    max_post_age_days: float = 14.0
    community_share: float = 0.3  # at most this share of a feed from one community (0: off)
    per_author: int = 2  # at most this many posts per author in a feed (0: off)
    small_group_members: int = 50  # a community this small (members) is a "small group"
    small_group_share: float = 0.2  # at least this share of a feed for small active groups (0: off)
    # A Redis round trip may take half the time the request's deadline leaves, up to
    # redis_max_budget_ms; past it the request degrades. Without a deadline: redis_timeout_ms.
    redis_timeout_ms: float = 50.0
    redis_max_budget_ms: float = 500.0
    reload_interval_s: float = 2.0  # how often the current-version pointer is checked
    write_timeout_ms: float = 2000.0  # per write-path Redis call (writes wait for the fsync)
    # Redis Cluster only: a write is acknowledged once this many replicas of every node it
    # wrote to have it (Redis WAIT), within redis_wait_ms; else UNAVAILABLE (retry). 0: no WAIT.
    redis_wait_replicas: int = 1
    redis_wait_ms: int = 500
    live_poll_s: float = 0.1  # how often each worker follows the live stream (new posts)
    # On SIGTERM the server first says NOT_SERVING on its health service and keeps answering
    # for drain_notice_s (health-checking clients take it out of their rotation meanwhile:
    # a call reaching a server that has stopped is cancelled, not queued), then stops taking
    # calls and gives the ones in flight up to drain_s to finish.
    drain_notice_s: float = 1.0
    drain_s: float = 10.0
    # Close each client connection after this long (gRPC GOAWAY; calls in flight get drain_s
    # to finish): a client balancing round_robin over DNS re-resolves when a connection
    # closes, which is how it finds replicas added since it connected. 0: never.
    max_connection_age_s: float = 0.0
    clock: str = "wall"  # wall | data (replay: now = the bundle's data end + elapsed)
    tls_cert: str = ""  # PEM certificate: serve gRPC over TLS (with tls_key)
    tls_key: str = ""  # PEM private key of tls_cert
    tls_client_ca: str = ""  # PEM CA: require client certificates signed by it (mutual TLS)
    auth_token_file: str = ""  # file holding a bearer token every call must present
    log_level: str = "WARNING"

    @property
    def grpc_port(self) -> int:
        return int(self.grpc_addr.rsplit(":", 1)[1])


def load_config(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    environ = dict(os.environ if environ is None else environ)
    parser = argparse.ArgumentParser(prog="python -m service", description="nichefeed ranking service")
    add_flags(parser, Config, env_prefix=ENV_PREFIX, environ=environ)
    args = parser.parse_args(argv)
    cfg = from_flags(Config, args)
    if cfg.clock not in ("wall", "data"):
        parser.error("--clock must be 'wall' or 'data'")
    if not 1 <= cfg.workers <= 64:
        parser.error("--workers must be 1..64")
    if not 1 <= cfg.candidates <= 5000:
        parser.error("--candidates must be 1..5000")
    if cfg.rank_slots < 0:
        parser.error("--rank-slots must be 0 (no limit) or more")
    if cfg.pin_cpus not in PIN_CPUS:
        parser.error(f"--pin-cpus must be one of {', '.join(PIN_CPUS)}, got {cfg.pin_cpus!r}")
    return cfg
