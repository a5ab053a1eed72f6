"""make bench / make bench-quick: the Rank hot path against the machine's own floor.

  python -m benchmarks.run [--quick] [--worlds 100k,1m] [--candidates 100,500]
                           [--workers 1,2] [--concurrency 1,8,32] [--scale-time 1.0]
                           [--skip retrieval,comparisons,memory] [--out benchmarks/results]

For every world (built once into var/bench/, see benchmarks/worlds.py), every candidate
count and every server process count, a `python -m service` subprocess is started on
loopback against a bench-private redis-server, and for every concurrency level the same
loader processes measure, back to back:
  1. the floor: an empty gRPC call to that server (health Check), and the composite
     floor op (that call + Redis PING + one MGET of N packed candidate records);
  2. Rank end to end, with /metrics scraped before and after for the stage shares.
On the headline world, the same Rank rows against the world published into a local Redis
Cluster (3 masters, 3 replicas: benchmarks/cluster.py), beside the single node's.
Then retrieval (FAISS index types on the trained vectors), memory of 1 and 2 server
processes, and the design comparisons. Last, on the headline world, the write path
(benchmarks/ingest.py): engagement ingest through FeedWriter (stream and unary) and Rank
idle vs while an ingest stream runs, against a scratch copy of the world's Redis.
Results: benchmarks/results/latest.{json,md}.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/faiss: single-query search as in the server

import argparse
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import redis

from benchmarks import cluster, comparisons, ingest, memory, report, retrieval, stages
from benchmarks.load import LoadGenerator
from benchmarks.servers import (
    ServerError,
    ServerProcess,
    connections_per_process,
    cpu_seconds,
    unspread_note,
    with_cpu,
)
from benchmarks.worlds import BENCH_VAR, ROOT, WORLDS, BenchWorld, log
from core import contract


@dataclass
class Plan:
    worlds: list[str]
    candidates: list[int]
    workers: list[int]
    concurrency: list[int]
    warmup_s: float
    empty_s: float
    floor_s: float
    rank_s: float
    headline_rank_s: float  # the world/candidates the goals are judged on get longer runs
    redis_s: float
    retrieval_queries: int
    retrieval_full: bool
    hnsw: bool
    comparison_s: float
    limit: int = 20
    users: int = 5000
    loaders: int = 2
    skip: list[str] = field(default_factory=list)
    headline_world: str = "1m"
    headline_candidates: int = 500
    pin_cpus: bool = True  # the servers' --pin-cpus true (false with --no-pin-cpus)
    # The write path (issue 5), on the headline world, run last (it writes to a scratch Redis).
    ingest_rank_s: float = 4.0  # Rank idle, then Rank while one ingest stream runs
    ingest_s: float = 3.0  # each ingest-only measurement
    ingest_concurrency: int = 8  # Rank callers for idle vs while ingesting
    ingest_streams: list[int] = field(default_factory=lambda: [1, 2])  # concurrent streams
    ingest_unary_callers: int = 4
    ingest_batch: int = 500  # events per WriteEngagements call
    ingest_stream_events: int = 5_000  # events per StreamEngagements call (at most: ~1 s each)
    ingest_max_events: int = 2_000_000  # per job, whatever the rate

    @classmethod
    def full(cls) -> Plan:
        return cls(
            worlds=["1m", "100k"],
            candidates=[500, 100],
            workers=[1, 2],
            concurrency=[1, 8, 32],
            warmup_s=0.5,
            empty_s=1.5,
            floor_s=1.5,
            rank_s=2.5,
            headline_rank_s=8.0,
            redis_s=1.5,
            retrieval_queries=200,
            retrieval_full=True,
            hnsw=True,
            comparison_s=2.0,
        )

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            worlds=["100k"],
            candidates=[500],
            workers=[1, 2],
            concurrency=[1, 8],
            warmup_s=0.3,
            empty_s=1.0,
            floor_s=1.0,
            rank_s=1.5,
            headline_rank_s=2.0,
            redis_s=0.8,
            retrieval_queries=100,
            retrieval_full=False,
            hnsw=True,
            comparison_s=1.0,
            headline_world="100k",
            ingest_rank_s=2.0,
            ingest_s=1.5,
            ingest_stream_events=2_500,
        )


def machine_info() -> dict:
    import platform
    import subprocess
    from importlib import metadata

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    libs = {}
    for name in (
        "grpcio",
        "protobuf",
        "faiss-cpu",
        "numpy",
        "redis",
        "hiredis",
        "prometheus-client",
        "implicit",
        "scipy",
        "psutil",
    ):
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libs[name] = None
    try:
        rv = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
        redis_server = next((p.split("=", 1)[1] for p in rv if p.startswith("v=")), " ".join(rv))
    except OSError:
        redis_server = None
    import psutil

    mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libraries": libs,
        "redis_server": redis_server,
        "loadavg_start": os.getloadavg(),
    }


def _record(res, **keys) -> dict:
    return {**keys, **res.summary()}


def bench_world(name: str, world: BenchWorld, plan: Plan, lg: LoadGenerator, out: dict) -> None:
    bundle = world.bundle_dir
    manifest = world.manifest()
    out["worlds"][name] = {
        "spec": asdict(world.spec) if world.spec else None,
        "version": world.version,
        "dims": manifest["dims"],
        "bundle_mb": memory.bundle_file_sizes(bundle),
        "build_seconds_this_run": world.build_seconds,
    }
    rng = np.random.default_rng(11)
    user_ids = np.load(bundle / contract.USER_IDS_FILE, mmap_mode="r")
    users = [str(user_ids[i]) for i in rng.choice(len(user_ids), size=min(plan.users, len(user_ids)), replace=False)]
    post_ids_all = np.load(bundle / contract.POST_IDS_FILE, mmap_mode="r")
    post_ids = [
        str(post_ids_all[i]) for i in rng.choice(len(post_ids_all), size=min(20_000, len(post_ids_all)), replace=False)
    ]
    common = {"redis": world.url, "version": world.version, "post_ids": post_ids, "users": users, "limit": plan.limit}

    if "rank" in plan.skip:  # only the other sections (e.g. ingest) of this world
        return
    # Redis alone (no server involved): PING and one read of N packed records.
    for c in sorted({1, *[c for c in plan.concurrency if c <= 8]}):
        for op in ("ping", "mget"):
            for n_rec in plan.candidates if op == "mget" else [0]:
                r = lg.run(op, c, plan.redis_s, records=n_rec, **common)
                out["redis_floor"].append(_record(r, world=name, records=n_rec or None))
    try:
        info = redis.Redis.from_url(world.url).info("memory")
        out["worlds"][name]["redis_used_memory_mb"] = round(info["used_memory"] / 2**20, 1)
    except Exception:  # informative only
        pass

    for cand in plan.candidates:
        headline = name == plan.headline_world and cand == plan.headline_candidates
        rank_s = plan.headline_rank_s if headline else plan.rank_s
        for workers in plan.workers:
            label = f"world {name}, {cand} candidates, {workers} process(es)"
            server = ServerProcess(world, cand, workers, pin_cpus=plan.pin_cpus)
            try:
                server.start()
            except ServerError as exc:
                log(f"{label}: not available, the server failed to start: {exc}")
                for c in plan.concurrency:
                    out["rank"].append(
                        {
                            "world": name,
                            "candidates": cand,
                            "workers": workers,
                            "concurrency": c,
                            "available": False,
                            "note": f"server failed to start: {str(exc)[:400]}",
                        }
                    )
                continue
            try:
                if workers > 1 and not server.multi_process_ok:
                    log(f"{label}: not available ({server.note})")
                    for c in plan.concurrency:
                        out["rank"].append(
                            {
                                "world": name,
                                "candidates": cand,
                                "workers": workers,
                                "concurrency": c,
                                "available": False,
                                "note": server.note,
                            }
                        )
                    continue
                log(f"{label}: server up in {server.startup_seconds:.1f}s ({server.workers} serving process(es))")
                job = {**common, "grpc": server.addr, "records": cand}
                for c in plan.concurrency:
                    keys = {"world": name, "candidates": cand, "workers": workers, "concurrency": c}
                    lg.run("rank", c, plan.warmup_s, **job)  # page in the index and connections
                    empty, empty_cpu = with_cpu(lg, server, "health", c, plan.empty_s, job)
                    floor = lg.run("floor", c, plan.floor_s, **job)
                    before = server.scrape()
                    rank, rank_cpu = with_cpu(lg, server, "rank", c, rank_s, job)
                    after = server.scrape()
                    row = {
                        **keys,
                        "available": True,
                        "serving_processes": server.workers,
                        "rank": rank.summary(),
                        "empty_rpc": empty.summary(),
                        "floor": floor.summary(),
                        "cpu": {"rank": rank_cpu, "empty_rpc": empty_cpu},
                        "connections_per_process": list(
                            connections_per_process(server.pids(), server.grpc_port).values()
                        ),
                    }
                    row["stages"] = stages.breakdown(before, after, row["rank"].get("mean_ms"))
                    _ratios(row)
                    note = unspread_note(workers, c, row["connections_per_process"])
                    if note:  # not a measurement of `workers` processes: no table or goal reads it as one
                        row.update(available=False, note=note)
                        log(f"  c={c}: {note}")
                    out["rank"].append(row)
                    log(
                        f"  c={c:<3} rank p50 {row['rank'].get('p50_ms')} p99 {row['rank'].get('p99_ms')} ms "
                        f"{row['rank']['throughput_per_s']}/s | floor p50 {row['floor'].get('p50_ms')} "
                        f"p99 {row['floor'].get('p99_ms')} ms | empty rpc {row['empty_rpc']['throughput_per_s']}/s"
                        + (f" | errors {row['rank']['errors']}" if row["rank"]["errors"] else "")
                    )
                if "memory" not in plan.skip and cand == max(plan.candidates):
                    mem = memory.measure(server.pids(), bundle)
                    out["memory"].append(
                        {
                            "world": name,
                            "candidates": cand,
                            "workers": workers,
                            "serving_processes": server.workers,
                            **mem,
                        }
                    )
                    log(
                        f"  memory: {mem['n_processes']} process(es), RSS {mem['total']['rss_mb']} MB, "
                        f"PSS {mem['total']['pss_mb']} MB"
                    )
            finally:
                server.stop()

    if "cluster" not in plan.skip and name == plan.headline_world:
        t0 = time.perf_counter()
        cluster.bench_cluster(name, world, plan, lg, common, out)
        out["timings_s"][f"cluster {name}"] = round(time.perf_counter() - t0, 1)

    if "comparisons" not in plan.skip:
        out["comparisons"].setdefault("hydration", {})[name] = comparisons.hydration(
            world.url, world.version, post_ids, n=max(plan.candidates), seconds=plan.comparison_s
        )
        out["comparisons"].setdefault("faiss_vs_numpy", {})[name] = comparisons.faiss_vs_numpy(
            bundle, k=max(plan.candidates)
        )
        log(f"comparisons done for world {name}")


def bench_ingest(name: str, world: BenchWorld, plan: Plan, lg: LoadGenerator, out: dict) -> None:
    """The write path: events/s through StreamEngagements and WriteEngagements, and Rank
    idle vs while one stream ingests at full speed, on 1 and 2 server processes, against a
    scratch copy of the world's Redis (writes never touch the world's own data, so neither
    a later benchmark of this run nor a later run sees their effects)."""
    import shutil
    import tempfile

    bundle = world.bundle_dir
    cand = plan.headline_candidates
    rng = np.random.default_rng(12)
    user_ids = np.load(bundle / contract.USER_IDS_FILE, mmap_mode="r")
    perm = rng.permutation(len(user_ids))
    # Disjoint users: engagements grow the ingest users' seen sets, never the Rank users'.
    n_rank = min(plan.users, max(1, len(user_ids) // 2))
    rank_users = [str(user_ids[i]) for i in perm[:n_rank]]
    ingest_users = [str(user_ids[i]) for i in perm[n_rank : n_rank + 20_000]] or rank_users
    (BENCH_VAR / "scratch").mkdir(parents=True, exist_ok=True)
    scratch_dir = Path(tempfile.mkdtemp(prefix=f"ingest-{name}-", dir=BENCH_VAR / "scratch"))
    res = {
        "world": name,
        "candidates": cand,
        "rank_concurrency": plan.ingest_concurrency,
        "users": {
            "rank": len(rank_users),
            "ingest": len(ingest_users),
            "disjoint": len(ingest_users) > 0 and ingest_users is not rank_users,
        },
        "kind_mix": ingest.KIND_MIX,
        "stream_events": plan.ingest_stream_events,
        "batch": plan.ingest_batch,
        "rows": [],
    }
    out["ingest"] = res
    scratch = None
    try:
        scratch, info = world.scratch_redis(scratch_dir / "redis")
        res["redis"] = info
        log(
            f"ingest on world {name}: scratch redis ({info['source']}, {info['seconds']}s, appendonly "
            f"{info.get('appendonly')}, appendfsync {info.get('appendfsync')})"
        )
        view = BenchWorld.existing(bundle, scratch.url, name)
        with ingest.IngestLoader() as ing:
            ing.setup(bundle, ingest_users, token=f"{int(time.time())}-{os.getpid()}")
            for workers in plan.workers:
                row = {"workers": workers}
                res["rows"].append(row)
                server = ServerProcess(
                    view, cand, workers, log_dir=world.root / "logs" / "ingest", pin_cpus=plan.pin_cpus
                )
                try:
                    server.start()
                except ServerError as exc:
                    row.update(available=False, note=f"server failed to start: {str(exc)[:400]}")
                    log(f"  ingest, {workers} process(es): not available: {exc}")
                    continue
                try:
                    if workers > 1 and not server.multi_process_ok:
                        row.update(available=False, note=server.note)
                        log(f"  ingest, {workers} process(es): not available ({server.note})")
                        continue
                    row.update(available=True, serving_processes=server.workers)
                    try:
                        _ingest_server(server, scratch, ing, lg, plan, rank_users, view, row)
                    except RuntimeError as exc:  # a failed job: report it, keep the run's other results
                        row.update(available=False, note=f"ingest failed: {str(exc)[:400]}")
                        log(f"  ingest, {workers} process(es): failed: {exc}")
                        break  # the loader may still be busy with the failed job
                finally:
                    server.stop()
        c = redis.Redis.from_url(scratch.url, socket_timeout=30)
        try:
            res["redis"]["keys_after"] = c.dbsize()
            res["redis"]["aof_delayed_fsync"] = c.info("persistence").get("aof_delayed_fsync")
            # What the writes left behind: every moved vector is one live-stream entry
            # (replayed by every worker on start), every event one event-log entry.
            res["redis"]["live_stream_entries_after"] = c.xlen(contract.live_stream_key(view.version))
            res["redis"]["event_log_entries_after"] = c.xlen(contract.EVENT_LOG_KEY)
            res["redis"]["used_memory_mb_after"] = round(c.info("memory")["used_memory"] / 2**20, 1)
            res["events_applied_total"] = sum(
                x["applied"] for r in res["rows"] if r.get("available") for x in [*r["ingest"], r["ingest_during_rank"]]
            )
        finally:
            c.close()
    finally:
        if scratch is not None:
            scratch.stop()
        shutil.rmtree(scratch_dir, ignore_errors=True)


def _gauge(text: str | None, name: str) -> float | None:
    """Largest sample of a metric family (per-process gauges in multiprocess mode)."""
    if not text:
        return None
    from prometheus_client.parser import text_string_to_metric_families

    vals = [s.value for fam in text_string_to_metric_families(text) if fam.name == name for s in fam.samples]
    return max(vals) if vals else None


def _ingest_server(
    server: ServerProcess,
    scratch,
    ing: ingest.IngestLoader,
    lg: LoadGenerator,
    plan: Plan,
    rank_users: list[str],
    view: BenchWorld,
    row: dict,
) -> None:
    c, lead = plan.ingest_concurrency, 0.5
    job = {
        "grpc": server.addr,
        "redis": view.url,
        "version": view.version,
        "post_ids": [],
        "users": rank_users,
        "limit": plan.limit,
        "records": plan.headline_candidates,
    }
    live = row["live_index_posts"] = {}
    log(f"  ingest, {server.workers} serving process(es): server up in {server.startup_seconds:.1f}s")
    live["start"] = _gauge(server.scrape(), "nichefeed_live_index_posts")

    # Rank idle, then Rank while one stream ingests at full speed (started `lead` s earlier,
    # ends after the Rank window: Rank is measured entirely under ingest).
    lg_run = _RankRunner(lg, server, c, job)
    lg_run.warm(plan.warmup_s)
    row["rank_idle"] = lg_run.measure(plan.ingest_rank_s)
    ing.start(
        "stream",
        server.addr,
        1,
        plan.ingest_rank_s + 2 * lead,
        stream_events=plan.ingest_stream_events,
        max_events=plan.ingest_max_events,
    )
    time.sleep(lead)
    row["rank_ingesting"] = lg_run.measure(plan.ingest_rank_s)
    row["ingest_during_rank"] = ing.wait()
    live["after_rank"] = _gauge(server.scrape(), "nichefeed_live_index_posts")
    i, b = row["rank_idle"], row["rank_ingesting"]
    log(
        f"  c={c} rank idle p50 {i['rank'].get('p50_ms')} p99 {i['rank'].get('p99_ms')} ms "
        f"{i['rank']['throughput_per_s']}/s | while ingesting p50 {b['rank'].get('p50_ms')} p99 "
        f"{b['rank'].get('p99_ms')} ms {b['rank']['throughput_per_s']}/s, ingest "
        f"{row['ingest_during_rank']['events_per_s']} events/s"
    )

    # Ingest alone: streams, then unary batches from a few callers.
    row["ingest"] = []
    redis_pid = scratch.proc.pid if scratch.proc else None
    runs = [("stream", k) for k in plan.ingest_streams] + [("batches", 1)] + [("unary", plan.ingest_unary_callers)]
    runs += [("graph", plan.ingest_unary_callers)]
    for op, k in runs:
        spids = server.pids()
        s0, r0, l0 = cpu_seconds(spids), cpu_seconds([redis_pid] if redis_pid else []), cpu_seconds([ing.pid])
        ing.start(
            op,
            server.addr,
            k,
            plan.ingest_s,
            stream_events=plan.ingest_stream_events,
            batch=plan.ingest_batch,
            max_events=plan.ingest_max_events,
        )
        r = ing.wait()
        s1, r1, l1 = cpu_seconds(spids), cpu_seconds([redis_pid] if redis_pid else []), cpu_seconds([ing.pid])
        per_k = 1000.0 / max(r["applied"], 1)
        r["cpu"] = {
            "server_ms_per_1k_events": round(per_k * 1000 * sum(s1[p] - s0.get(p, 0) for p in s1), 2),
            "redis_ms_per_1k_events": round(per_k * 1000 * sum(r1[p] - r0.get(p, 0) for p in r1), 2),
            "loader_ms_per_1k_events": round(per_k * 1000 * sum(l1[p] - l0.get(p, 0) for p in l1), 2),
            "server_cores_busy": round(sum(s1[p] - s0.get(p, 0) for p in s1) / r["seconds"], 2)
            if r["seconds"]
            else None,
            "redis_cores_busy": round(sum(r1[p] - r0.get(p, 0) for p in r1) / r["seconds"], 2)
            if r["seconds"]
            else None,
        }
        # How a multi-process server shared the work (SO_REUSEPORT places each connection).
        r["cpu"]["server_cpu_s_by_process"] = sorted(
            (round(s1[p] - s0.get(p, 0), 2) for p in s1 if s1[p] - s0.get(p, 0) >= 0.01), reverse=True
        )
        row["ingest"].append(r)
        log(
            f"  ingest {op} x{k}: {r['events_per_s']} events/s ({r['applied']} applied in {r['seconds']}s, "
            f"{r['calls']} calls, call p50 {r.get('call_p50_ms')} ms)"
            + (f" errors {r['errors']}" if r["errors"] else "")
        )
    live["end"] = _gauge(server.scrape(), "nichefeed_live_index_posts")
    row["rank_live_graph"] = _rank_with_live_graphs(lg_run, lg, server, scratch, plan, rank_users, view, job, c)


GRAPH_JOINS, GRAPH_LEAVES, GRAPH_MUTES = 3, 3, 2  # live entries per Rank user in the live-graph row


def _rank_with_live_graphs(lg_run, lg, server, scratch, plan, rank_users, view, job, c) -> dict:
    """Rank when every user has a live graph (joins since training, leaves, mutes), against
    Rank with empty graphs measured just before (same server, same live index: the ingest
    runs above grew it) and the floor at the same concurrency: the cost of reading the live
    graph in the user's round trip, and of the second round trip that a join since
    training adds. The entries are removed afterwards (the next row starts clean)."""
    communities = np.load(view.bundle_dir / contract.COMMUNITY_IDS_FILE).tolist()
    manifest = json.loads((view.bundle_dir / contract.MANIFEST_FILE).read_text())
    at = max(int(time.time()), int(manifest["params"].get("data_end_ts", 0)) + 1)
    rng = np.random.default_rng(5)
    client = redis.Redis.from_url(scratch.url, socket_timeout=30)
    keys = [contract.graph_key(u) for u in rank_users]
    try:
        lg_run.warm(plan.warmup_s)
        empty = lg_run.measure(plan.ingest_rank_s)
        pipe = client.pipeline(transaction=False)
        for key in keys:
            picks = rng.choice(len(communities), size=GRAPH_JOINS + GRAPH_LEAVES + GRAPH_MUTES, replace=False)
            entry = {}
            for j, ci in enumerate(picks.tolist()):
                name = communities[ci]
                if j < GRAPH_JOINS:
                    entry[contract.GRAPH_COMMUNITY + name] = contract.encode_graph_entry(contract.ROLE_MEMBER, at)
                elif j < GRAPH_JOINS + GRAPH_LEAVES:
                    entry[contract.GRAPH_COMMUNITY + name] = contract.encode_graph_entry(contract.GRAPH_LEFT, at)
                else:
                    entry[contract.GRAPH_MUTED + name] = at
            pipe.hset(key, mapping=entry)
        pipe.execute()
        lg_run.warm(plan.warmup_s)
        measured = lg_run.measure(plan.ingest_rank_s)
        floor = lg.run("floor", c, plan.ingest_rank_s, **job).summary()
    finally:
        for i in range(0, len(keys), 10_000):
            client.delete(*keys[i : i + 10_000])
        client.close()
    r = measured["rank"]
    log(
        f"  c={c} rank with live graphs ({GRAPH_JOINS} joins, {GRAPH_LEAVES} leaves, {GRAPH_MUTES} mutes a user) "
        f"p50 {r.get('p50_ms')} p99 {r.get('p99_ms')} ms | floor p50 {floor.get('p50_ms')} p99 {floor.get('p99_ms')} ms"
    )
    return {
        **measured,
        "empty": empty,
        "floor": floor,
        "entries_per_user": {"joins": GRAPH_JOINS, "leaves": GRAPH_LEAVES, "mutes": GRAPH_MUTES},
    }


class _RankRunner:
    """Rank closed loop against one server, with CPU and stage shares (as the main rows)."""

    def __init__(self, lg: LoadGenerator, server: ServerProcess, concurrency: int, job: dict):
        self.lg, self.server, self.c, self.job = lg, server, concurrency, job

    def warm(self, seconds: float) -> None:
        self.lg.run("rank", self.c, seconds, **self.job)

    def measure(self, seconds: float) -> dict:
        before = self.server.scrape()
        res, cpu = with_cpu(self.lg, self.server, "rank", self.c, seconds, self.job)
        after = self.server.scrape()
        summary = res.summary()
        return {"rank": summary, "cpu": cpu, "stages": stages.breakdown(before, after, summary.get("mean_ms"))}


def _ratios(row: dict) -> None:
    r, f, e = row["rank"], row["floor"], row["empty_rpc"]
    row["ratio"] = {
        "p50_vs_floor": round(r["p50_ms"] / f["p50_ms"], 2) if r.get("p50_ms") and f.get("p50_ms") else None,
        "p99_vs_floor": round(r["p99_ms"] / f["p99_ms"], 2) if r.get("p99_ms") and f.get("p99_ms") else None,
        "throughput_vs_empty_rpc": round(r["throughput_per_s"] / e["throughput_per_s"], 3)
        if e["throughput_per_s"]
        else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one 100k world, fewer settings, shorter runs (~2 min)")
    ap.add_argument("--worlds", help="comma list of " + ",".join(WORLDS))
    ap.add_argument("--candidates", help="comma list, e.g. 100,500")
    ap.add_argument("--workers", help="server processes, comma list, e.g. 1,2")
    ap.add_argument("--concurrency", help="closed-loop callers, comma list, e.g. 1,8,32")
    ap.add_argument("--scale-time", type=float, default=1.0, help="multiply every measuring window")
    ap.add_argument("--skip", default="", help="comma list of: rank, cluster, retrieval, comparisons, memory, ingest")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results directory (default benchmarks/results; --quick: var/bench/results, so that a "
        "quick run never overwrites the committed full results)",
    )
    ap.add_argument(
        "--bundle", type=Path, help="bench an existing published bundle (with --redis-url) instead of a world"
    )
    ap.add_argument("--redis-url", help="Redis holding --bundle's features")
    ap.add_argument(
        "--no-pin-cpus",
        action="store_true",
        help="start the servers with --pin-cpus false (by default the bench starts them with --pin-cpus true: each server process on a CPU of its own)",
    )
    args = ap.parse_args(argv)

    plan = Plan.quick() if args.quick else Plan.full()
    if args.out is None:
        args.out = ROOT / "var" / "bench" / "results" if args.quick else ROOT / "benchmarks" / "results"
    if args.worlds:
        plan.worlds = args.worlds.split(",")
        plan.headline_world = plan.worlds[0] if plan.headline_world not in plan.worlds else plan.headline_world
    for name in ("candidates", "workers", "concurrency"):
        if getattr(args, name):
            setattr(plan, name, [int(x) for x in getattr(args, name).split(",")])
    if plan.headline_candidates not in plan.candidates:
        plan.headline_candidates = max(plan.candidates)
    for name in (
        "warmup_s",
        "empty_s",
        "floor_s",
        "rank_s",
        "headline_rank_s",
        "redis_s",
        "comparison_s",
        "ingest_rank_s",
        "ingest_s",
    ):
        setattr(plan, name, getattr(plan, name) * args.scale_time)
    plan.skip = [s for s in args.skip.split(",") if s]
    plan.pin_cpus = not args.no_pin_cpus
    if args.bundle:
        if not args.redis_url:
            ap.error("--bundle needs --redis-url")
        plan.worlds = ["given"]
        plan.headline_world = "given"

    t_start = time.perf_counter()
    out = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": "quick" if args.quick else "full",
        "machine": machine_info(),
        "plan": asdict(plan),
        "worlds": {},
        "redis_floor": [],
        "rank": [],
        "retrieval": {},
        "memory": [],
        "comparisons": {},
        "ingest": None,
        "cluster": None,
        "timings_s": {},
    }
    log(
        f"bench ({out['mode']}): worlds {plan.worlds}, candidates {plan.candidates}, processes {plan.workers}, "
        f"concurrency {plan.concurrency}"
    )
    with LoadGenerator(plan.loaders) as lg:
        for name in plan.worlds:
            t0 = time.perf_counter()
            world = BenchWorld.existing(args.bundle, args.redis_url) if args.bundle else BenchWorld(WORLDS[name])
            world.ensure_built()
            try:
                world.start_redis()  # inside the try: a failed publish must not leave it running
                bench_world(name, world, plan, lg, out)
                if "retrieval" not in plan.skip:
                    t1 = time.perf_counter()
                    res = retrieval.run(
                        world.bundle_dir,
                        ks=sorted(set(plan.candidates)),
                        n_queries=plan.retrieval_queries,
                        full=plan.retrieval_full,
                        hnsw=plan.hnsw,
                        log=log,
                    )
                    out["retrieval"][name] = {"world": name, **res}
                    out["timings_s"][f"retrieval {name}"] = round(time.perf_counter() - t1, 1)
                if "ingest" not in plan.skip and name == plan.headline_world:
                    t1 = time.perf_counter()
                    bench_ingest(name, world, plan, lg, out)  # last: it needs the world's redis stopped
                    out["timings_s"][f"ingest {name}"] = round(time.perf_counter() - t1, 1)
            finally:
                world.stop()
            out["timings_s"][f"world {name}"] = round(time.perf_counter() - t0, 1)
    out["machine"]["loadavg_end"] = os.getloadavg()
    out["timings_s"]["total"] = round(time.perf_counter() - t_start, 1)
    out["goals"] = report.goals(out, plan.headline_world, plan.headline_candidates)
    json_path, md_path = report.write(out, args.out)
    print(Path(md_path).read_text())
    log(f"done in {out['timings_s']['total']:.0f}s: {json_path}, {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
