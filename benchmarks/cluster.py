"""The cluster row of `make bench`: Rank against the same world published into a local
Redis Cluster (3 masters, 3 replicas on loopback: core/local_cluster.py, the one the
tests start), beside the single-node rows of the same run.

Same bundle, same server flags (only --redis-url differs), same loader processes, users,
candidates, process counts and callers as the single-node rows; the single node's
redis-server is still running meanwhile (idle), so both sets of rows see the same
machine. Also the cost the cluster adds to hydration: the service's own post read
(FeatureStore.read_post_records) of N candidates as one MGET on one node against one
MGET per post slot, grouped by node and sent to the three masters at once; and, to
separate the cost of one command per key from the cluster's, the same single-key MGETs
pipelined to the one node.
"""

from __future__ import annotations

import shutil
import time

import numpy as np

from benchmarks.comparisons import _time
from benchmarks.servers import ServerError, ServerProcess, with_cpu
from benchmarks.worlds import BENCH_VAR, BenchWorld, log
from core import contract
from core.local_cluster import LocalCluster
from core.redis_conn import connect
from service.store import FeatureStore
from training import publish as publishing


def hydration(single_url: str, cluster_url: str, version: str, post_ids: list[str], n: int, seconds: float) -> dict:
    """N packed post records read the way Rank reads them, from one node and from the
    cluster (sequential calls from this process, decode included)."""
    rng = np.random.default_rng(3)
    sets = [
        [post_ids[i] for i in rng.choice(len(post_ids), size=min(n, len(post_ids)), replace=False)] for _ in range(16)
    ]
    out = {"records": len(sets[0])}
    for mode, url in (("single", single_url), ("cluster", cluster_url)):
        store = FeatureStore(url, timeout_ms=5000, max_budget_s=5.0)
        it = iter(range(1 << 62))
        try:
            out[mode] = _time(
                lambda s=store, it=it: contract.decode_posts(s.read_post_records(version, sets[next(it) % 16])),
                seconds,
            )
            if store.cluster is not None:
                keys = [contract.post_key(version, p) for p in sets[0]]
                per_node, _ = store.cluster.plan([("MGET", *keys)])
                out[mode]["mget_commands_per_node"] = sorted((len(cmds) for _, cmds in per_node.values()), reverse=True)
            else:
                # What one command per key costs without the cluster: the same store's one
                # round trip, one single-key MGET a post, all pipelined to the one node.
                it2 = iter(range(1 << 62))

                def per_key(s=store, it=it2):
                    keys = [contract.post_key(version, p) for p in sets[next(it) % 16]]
                    return contract.decode_posts([v for (v,) in s.round_trip("posts", [("MGET", k) for k in keys])])

                out["single_per_key"] = _time(per_key, seconds)
        finally:
            store.close()
    return out


def bench_cluster(name: str, world: BenchWorld, plan, lg, job: dict, out: dict) -> None:
    """Publish the world into a fresh local cluster and run the Rank rows against it."""
    cand = plan.headline_candidates
    res = out["cluster"] = {"world": name, "candidates": cand, "rows": []}
    root = BENCH_VAR / "cluster" / name
    shutil.rmtree(root, ignore_errors=True)  # a fresh cluster every run: nodes.conf of an old one would not join
    t0 = time.perf_counter()
    with LocalCluster(root) as cluster:
        res["start_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        with connect(cluster.url) as client:
            publishing.publish(world.bundle_dir, client, keep=1, progress=False)
        res["publish_s"] = round(time.perf_counter() - t0, 1)
        res["masters"] = len(cluster.master_ports())
        log(f"cluster: 3+3 nodes up in {res['start_s']}s, world {name} published in {res['publish_s']}s")
        res["hydration"] = hydration(world.url, cluster.url, world.version, job["post_ids"], cand, plan.comparison_s)
        h = res["hydration"]
        log(
            f"  hydration of {h['records']} records: one node p50 {h['single']['p50_ms']} ms, cluster p50 "
            f"{h['cluster']['p50_ms']} ms ({h['cluster']['mget_commands_per_node']} MGETs per master)"
        )
        view = BenchWorld.existing(world.bundle_dir, cluster.url, name)
        logs = world.root / "logs" / "cluster"
        for workers in plan.workers:
            _rows(view, cand, workers, plan, lg, {**job, "redis": cluster.url, "records": cand}, res["rows"], logs)
        shutil.rmtree(root, ignore_errors=True)


def _rows(view: BenchWorld, cand: int, workers: int, plan, lg, job: dict, rows: list, logs) -> None:
    server = ServerProcess(view, cand, workers, log_dir=logs, pin_cpus=plan.pin_cpus)
    try:
        server.start()
    except ServerError as exc:
        log(f"  cluster, {workers} process(es): not available: {exc}")
        rows.append({"workers": workers, "available": False, "note": f"server failed to start: {str(exc)[:400]}"})
        return
    try:
        if workers > 1 and not server.multi_process_ok:
            rows.append({"workers": workers, "available": False, "note": server.note})
            return
        job = {**job, "grpc": server.addr}
        for c in plan.concurrency:
            lg.run("rank", c, plan.warmup_s, **job)
            rank, cpu = with_cpu(lg, server, "rank", c, plan.headline_rank_s, job)
            row = {"workers": workers, "concurrency": c, "available": True, "rank": rank.summary(), "cpu": cpu}
            rows.append(row)
            r = row["rank"]
            log(
                f"  cluster, {workers} process(es), c={c:<3} rank p50 {r.get('p50_ms')} p99 {r.get('p99_ms')} ms "
                f"{r['throughput_per_s']}/s" + (f" | errors {r['errors']}" if r["errors"] else "")
            )
    finally:
        server.stop()
