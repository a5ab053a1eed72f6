"""Redis memory of one published version: `python -m benchmarks.redis_memory BUNDLE_DIR`.

Publishes the bundle into a fresh redis-server and into a fresh local Redis Cluster (3
masters, 3 replicas) and prints used_memory (one node; the sum over the masters) before
and after, per million posts: the sizing figure of README "Running in production".
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import redis

from core.bundle import load_bundle
from core.embedded_redis import EmbeddedRedis, free_port
from core.local_cluster import LocalCluster
from core.redis_conn import connect
from training import publish as publishing


def _used(ports: list[int]) -> int:
    total = 0
    for port in ports:
        with redis.Redis(port=port, socket_timeout=10) as c:
            total += int(c.info("memory")["used_memory"])
    return total


def measure(bundle_dir: Path) -> dict:
    bundle = load_bundle(bundle_dir)
    n_posts, n_users = len(bundle.post_ids), len(bundle.user_ids)
    out = {"bundle": str(bundle_dir), "posts": n_posts, "users": n_users}
    with tempfile.TemporaryDirectory(prefix="nf-mem-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "single", port=free_port()).start()
        try:
            before = _used([server.port])
            t0 = time.perf_counter()
            publishing.publish(bundle_dir, connect(server.url), progress=False)
            out["single"] = {"used_mb": (_used([server.port]) - before) / 2**20, "publish_s": time.perf_counter() - t0}
        finally:
            server.stop()
        with LocalCluster(Path(tmp) / "cluster") as cluster:
            masters = cluster.master_ports()
            before = _used(masters)
            t0 = time.perf_counter()
            publishing.publish(bundle_dir, connect(cluster.url), progress=False)
            out["cluster"] = {
                "used_mb": (_used(masters) - before) / 2**20,
                "per_master_mb": [round(_used([p]) / 2**20, 1) for p in masters],
                "publish_s": time.perf_counter() - t0,
            }
    for mode in ("single", "cluster"):
        out[mode]["mb_per_million_posts"] = out[mode]["used_mb"] * 1e6 / n_posts
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    print(json.dumps(measure(parser.parse_args().bundle), indent=2))


if __name__ == "__main__":
    main()
