"""What an experiment costs: memory of two bundles, Rank with an experiment on and off
beside the floor, and the shadow's CPU.

    python -m benchmarks.experiment --bundle models/<version> [--requests 2000] [--out var/bench/experiment]

A scratch redis-server and models directory: the bundle is published as the control and
a copy of it (another version, so a second bundle is really loaded) is staged as the
candidate. One `python -m service` subprocess serves; one client calls it in sequence
(concurrency 1: latency, not throughput). Each setting is measured after a warm-up:
  - off:    no experiment;
  - on:     the candidate serves 50% of users (both bundles loaded, the served memory written);
  - shadow: share 0, shadow rate 1.0 (every answer also ranked by the candidate, unserved);
  - floor:  grpc.health.v1 Check on the same server, the empty round trip.
Memory is the server process's RSS, PSS and private memory (benchmarks/memory.py) after
each setting. The shadow's cost is its own CPU per shadow ranking
(nichefeed_shadow_cpu_seconds) and the server's CPU per Rank with and without it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import psutil
import redis

from benchmarks.memory import measure
from core import contract
from core.bundle import load_bundle
from core.embedded_redis import EmbeddedRedis, free_port
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from training import experiment
from training import publish as publishing


def clone(src: Path, models: Path, version: str) -> None:
    dst = models / version
    shutil.copytree(src, dst)
    manifest = json.loads((dst / contract.MANIFEST_FILE).read_text())
    manifest["model_version"] = version
    manifest["files"] = contract.describe_files(dst)
    (dst / contract.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def percentiles(samples: list[float]) -> dict:
    a = np.array(samples) * 1000
    return {
        "n": len(a),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
    }


def metric(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else " ")) or line.startswith(name + "{"):
            if want and want not in line:
                continue
            total += float(line.rsplit(" ", 1)[1])
    return total


class Bench:
    def __init__(self, bundle: Path, scratch: Path, requests: int):
        self.requests = requests
        self.models = scratch / "models"
        self.models.mkdir()
        clone(bundle, self.models, "ctl")
        clone(bundle, self.models, "cand")
        self.redis = EmbeddedRedis(scratch / "redis", port=free_port()).start()
        self.client = redis.Redis.from_url(self.redis.url)
        publishing.publish(self.models / "ctl", self.client, progress=False)
        publishing.publish(self.models / "cand", self.client, progress=False, serve=False, force=True)
        self.users = list(load_bundle(self.models / "ctl", verify=False).user_ids)
        self.port, self.metrics_port = free_port(), free_port()
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service",
                "--grpc-addr",
                f"127.0.0.1:{self.port}",
                "--metrics-addr",
                f"127.0.0.1:{self.metrics_port}",
                "--redis-url",
                self.redis.url,
                "--models-dir",
                str(self.models),
                "--clock",
                "data",
                "--reload-interval-s",
                "0.2",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(scratch / "server.log", "w"),
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        grpc.channel_ready_future(self.channel).result(timeout=60)
        self.rank = ranking_pb2_grpc.FeedRankerStub(self.channel).Rank
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        check = health_pb2_grpc.HealthStub(self.channel).Check
        self.floor = lambda: check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        self.rng = np.random.default_rng(0)

    def scrape(self) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()

    def run(self, n: int) -> tuple[dict, dict, float]:
        """(Rank latency, variants seen, server CPU seconds per Rank) over n calls."""
        cpu0 = sum(psutil.Process(self.proc.pid).cpu_times()[:2])
        samples, variants = [], {}
        for user in self.rng.choice(self.users, n):
            t0 = time.perf_counter()
            resp = self.rank(ranking_pb2.RankRequest(user_id=str(user), limit=20), timeout=10)
            samples.append(time.perf_counter() - t0)
            variants[resp.experiment or "none"] = variants.get(resp.experiment or "none", 0) + 1
        cpu = sum(psutil.Process(self.proc.pid).cpu_times()[:2]) - cpu0
        return percentiles(samples), variants, cpu / n

    def floor_run(self, n: int) -> dict:
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.floor()
            samples.append(time.perf_counter() - t0)
        return percentiles(samples)

    def setting(self, name: str, out: dict) -> None:
        self.run(max(50, self.requests // 10))  # warm-up
        floor = self.floor_run(self.requests)
        latency, variants, cpu = self.run(self.requests)
        out[name] = {
            "rank": latency,
            "floor": floor,
            "rank_over_floor_p50": round(latency["p50_ms"] / floor["p50_ms"], 2),
            "variants": variants,
            "server_cpu_ms_per_rank": round(cpu * 1000, 3),
            "memory": measure([self.proc.pid], self.models)["total"],
        }

    def start_experiment(self, **kw) -> None:
        experiment.start(self.client, self.models, "cand", salt="bench", grace_s=0, **kw)
        end = time.monotonic() + 30
        want = "candidate" if kw.get("share", 0) > 0 else "control"
        while time.monotonic() < end:  # the reloader picks it up within its interval
            if any(
                self.rank(ranking_pb2.RankRequest(user_id=u, limit=5), timeout=10).experiment == want
                for u in self.users[:50]
            ):
                return
            time.sleep(0.1)
        raise RuntimeError("the server did not start the experiment")

    def stop_experiment(self) -> None:
        experiment.stop(self.client)
        time.sleep(0.5)

    def close(self) -> None:
        self.channel.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.client.close()
        self.redis.stop()


def bench(bundle: Path, requests: int) -> dict:
    out: dict = {"bundle": str(bundle), "requests": requests, "settings": {}}
    with tempfile.TemporaryDirectory(prefix="nf-exp-bench-") as tmp:
        b = Bench(bundle, Path(tmp), requests)
        try:
            s = out["settings"]
            b.setting("off", s)
            b.start_experiment(share=50)
            b.setting("on", s)
            b.stop_experiment()
            b.start_experiment(share=0, shadow_rate=0.0)
            b.setting("share 0, shadow off", s)
            b.stop_experiment()
            before = b.scrape()
            b.start_experiment(share=0, shadow_rate=1.0)
            b.setting("share 0, shadow rate 1", s)
            after = b.scrape()
            runs = metric(after, "nichefeed_shadow_cpu_seconds_count") - metric(
                before, "nichefeed_shadow_cpu_seconds_count"
            )
            cpu = metric(after, "nichefeed_shadow_cpu_seconds_sum") - metric(before, "nichefeed_shadow_cpu_seconds_sum")
            out["shadow"] = {
                "scored": metric(after, "nichefeed_shadow_runs_total", outcome="scored")
                - metric(before, "nichefeed_shadow_runs_total", outcome="scored"),
                "dropped": metric(after, "nichefeed_shadow_runs_total", outcome="dropped")
                - metric(before, "nichefeed_shadow_runs_total", outcome="dropped"),
                "cpu_ms_per_shadow_ranking": round(cpu / runs * 1000, 3) if runs else None,
            }
            b.stop_experiment()
            out["bundle_mb"] = round(sum(p.stat().st_size for p in (b.models / "ctl").iterdir()) / 2**20, 1)
        finally:
            b.close()
    return out


def markdown(res: dict) -> str:
    lines = [
        f"Experiment costs on {res['bundle']} ({res['bundle_mb']} MB a bundle), {res['requests']} sequential Rank calls per setting:",
        "",
        "| setting | Rank p50 / p99 ms | floor p50 ms | Rank/floor p50 | server CPU ms per Rank | RSS MB | PSS MB | private MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["settings"].items():
        m = r["memory"]
        lines.append(
            f"| {name} | {r['rank']['p50_ms']} / {r['rank']['p99_ms']} | {r['floor']['p50_ms']} | "
            f"{r['rank_over_floor_p50']} | {r['server_cpu_ms_per_rank']} | {m['rss_mb']} | {m['pss_mb']} | {m['private_mb']} |"
        )
    sh = res["shadow"]
    lines += [
        "",
        f"Shadow at rate 1: {sh['scored']:.0f} rankings scored, {sh['dropped']:.0f} dropped (thread busy), "
        f"{sh['cpu_ms_per_shadow_ranking']} ms of CPU each.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.experiment", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--bundle", type=Path, required=True, help="a bundle directory (published as control and candidate)"
    )
    ap.add_argument("--requests", type=int, default=2000, help="Rank calls per setting")
    ap.add_argument("--out", type=Path, default=Path("var/bench/experiment"), help="directory for experiment.json/.md")
    args = ap.parse_args(argv)
    if not (args.bundle / contract.MANIFEST_FILE).is_file():
        print(f"error: {args.bundle} is not a bundle (no {contract.MANIFEST_FILE})", file=sys.stderr)
        return 2
    res = bench(args.bundle, args.requests)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "experiment.json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    (args.out / "experiment.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
