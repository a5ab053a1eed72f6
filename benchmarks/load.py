"""The load generator: closed loops of N concurrent callers in separate processes.

Loader processes are started once per bench run ('spawn': no gRPC state crosses a fork)
and take jobs over a pipe. A job is one operation run in a closed loop by `inflight`
callers (threads, each with its own gRPC channel and TCP connection, so that connections
spread over the worker processes of a multi-process server), bounded by a request count
and a number of seconds. The same loaders run the floor operations and Rank, so both
carry the same client-side cost.

Operations:
  health  grpc.health.v1.Health/Check on the server under test: the empty gRPC round trip
  ping    Redis PING
  mget    one MGET of N packed post records (the service's layout) + contract.decode_posts
  floor   health, then ping, then mget: the physical floor of one Rank call, in sequence
  rank    nichefeed.v1.FeedRanker/Rank for a sampled user (home feed)
"""

from __future__ import annotations

import array
import contextlib
import multiprocessing as mp
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

RPC_TIMEOUT_S = 5.0


@dataclass
class LoadResult:
    op: str
    concurrency: int
    latencies: np.ndarray  # seconds, successful calls only
    elapsed: float  # seconds, the longest loader's measuring window
    throughput: float  # successful calls per second, summed over loader processes
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict:
        lat = self.latencies * 1000.0
        out = {
            "op": self.op,
            "concurrency": self.concurrency,
            "n": self.n,
            "seconds": round(self.elapsed, 2),
            "throughput_per_s": round(self.throughput, 1),
            "errors": dict(self.errors),
        }
        if self.n:
            p = np.percentile(lat, [50, 90, 99, 99.9])
            out.update(
                {
                    "mean_ms": round(float(lat.mean()), 3),
                    "p50_ms": round(float(p[0]), 3),
                    "p90_ms": round(float(p[1]), 3),
                    "p99_ms": round(float(p[2]), 3),
                    "p999_ms": round(float(p[3]), 3),
                    "max_ms": round(float(lat.max()), 3),
                }
            )
        return out


# --------------------------------------------------------------------------------------
# Inside a loader process
# --------------------------------------------------------------------------------------
class _Callers:
    """Per-process cache of channels and Redis clients, one per caller slot."""

    def __init__(self):
        self.addr = None
        self.channels: list = []
        self.redis_url = None
        self.redis: list = []

    def channel(self, addr: str, i: int):
        import grpc

        if addr != self.addr:
            for ch in self.channels:
                ch.close()
            self.channels, self.addr = [], addr
        while len(self.channels) <= i:
            # A local subchannel pool gives every caller its own TCP connection, so that a
            # multi-process server (SO_REUSEPORT) sees several connections to spread.
            self.channels.append(grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)]))
        return self.channels[i]

    def redis_client(self, url: str, i: int):
        import redis

        if url != self.redis_url:
            for r in self.redis:
                r.close()
            self.redis, self.redis_url = [], url
        while len(self.redis) <= i:
            self.redis.append(redis.Redis.from_url(url, socket_timeout=RPC_TIMEOUT_S))
        return self.redis[i]


def _make_op(job: dict, callers: _Callers, slot: int, seed: int):
    """A zero-argument callable doing one operation, for caller `slot`."""
    op = job["op"]
    rng = np.random.default_rng(seed)
    calls = []
    if op in ("health", "floor"):
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        check = health_pb2_grpc.HealthStub(callers.channel(job["grpc"], slot)).Check
        req = health_pb2.HealthCheckRequest(service="")
        calls.append(lambda: check(req, timeout=RPC_TIMEOUT_S))
    if op in ("ping", "floor"):
        r = callers.redis_client(job["redis"], slot)
        calls.append(r.ping)
    if op in ("mget", "floor"):
        from core import contract

        r = callers.redis_client(job["redis"], slot)
        version, ids, n = job["version"], job["post_ids"], job["records"]
        key_sets = [
            [contract.post_key(version, ids[j]) for j in rng.choice(len(ids), size=min(n, len(ids)), replace=False)]
            for _ in range(16)
        ]
        it = iter(range(1 << 62))
        mget = r.mget
        calls.append(lambda: contract.decode_posts(mget(key_sets[next(it) % 16])))
    if op == "rank":
        from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc

        rank = ranking_pb2_grpc.FeedRankerStub(callers.channel(job["grpc"], slot)).Rank
        users = list(job["users"])
        rng.shuffle(users)
        reqs = [
            ranking_pb2.RankRequest(user_id=u, limit=job.get("limit", 20), explain=job.get("explain", False))
            for u in users
        ]
        it = iter(range(1 << 62))
        calls.append(lambda: rank(reqs[next(it) % len(reqs)], timeout=RPC_TIMEOUT_S))
    if not calls:
        raise ValueError(f"unknown op {op!r}")
    if len(calls) == 1:
        return calls[0]
    return lambda: [c() for c in calls]


def _run_job(job: dict, callers: _Callers, proc_index: int) -> dict:
    import grpc
    import redis

    k = job["inflight"]
    quota = max(1, job["requests"] // k)
    ops = [_make_op(job, callers, slot, seed=proc_index * 1000 + slot) for slot in range(k)]
    lats = [array.array("d") for _ in range(k)]
    errors: dict[str, int] = {}
    lock = threading.Lock()
    start = threading.Barrier(k + 1)
    stop_at = [0.0]

    def caller(i: int) -> None:
        op, out, perf = ops[i], lats[i], time.perf_counter
        start.wait()
        end = stop_at[0]
        for _ in range(quota):
            t0 = perf()
            if t0 >= end:
                break
            try:
                op()
            except grpc.RpcError as exc:
                with lock:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                continue
            except (redis.exceptions.RedisError, OSError) as exc:
                with lock:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            out.append(perf() - t0)

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(k)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    stop_at[0] = t0 + job["seconds"]
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    merged = array.array("d")
    for a in lats:
        merged.extend(a)
    return {"lat": merged.tobytes(), "elapsed": elapsed, "errors": errors}


def serve_jobs(conn, handle) -> None:
    """A loader process's loop: take jobs from the parent until None or EOF, answer each
    with handle(job), or with the error it raised (the parent fails the measurement)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        try:
            conn.send(handle(job))
        except Exception as exc:
            conn.send({"error": f"{type(exc).__name__}: {exc}"})


def _loader_main(conn, proc_index: int) -> None:
    callers = _Callers()
    serve_jobs(conn, lambda job: _run_job(job, callers, proc_index))


# --------------------------------------------------------------------------------------
# In the bench process
# --------------------------------------------------------------------------------------
class LoadGenerator:
    """A bounded set of loader processes (at most `processes`) reused for every job."""

    def __init__(self, processes: int = 2):
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for i in range(processes):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_loader_main, args=(child, i), daemon=True, name=f"bench-loader-{i}")
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)

    def run(self, op: str, concurrency: int, seconds: float, requests: int = 10**9, **job) -> LoadResult:
        n_procs = min(concurrency, len(self.procs))
        shares = [concurrency // n_procs + (1 if i < concurrency % n_procs else 0) for i in range(n_procs)]
        for i in range(n_procs):
            self.conns[i].send(
                {
                    **job,
                    "op": op,
                    "inflight": shares[i],
                    "seconds": seconds,
                    "requests": max(1, requests * shares[i] // concurrency),
                }
            )
        replies = []
        for i in range(n_procs):
            if not self.conns[i].poll(seconds + 120):
                raise RuntimeError(f"loader {i} did not answer a {op} job within {seconds + 120:.0f}s")
            replies.append(self.conns[i].recv())
        failed = [r["error"] for r in replies if "error" in r]
        if failed:
            raise RuntimeError(f"{op} load failed: {failed[0]}")
        lats = [np.frombuffer(r["lat"], dtype=np.float64) for r in replies]
        errors: dict[str, int] = {}
        for r in replies:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        throughput = sum(len(lat) / r["elapsed"] for lat, r in zip(lats, replies) if r["elapsed"] > 0)
        return LoadResult(
            op,
            concurrency,
            np.concatenate(lats) if lats else np.empty(0),
            max(r["elapsed"] for r in replies),
            throughput,
            errors,
        )

    def close(self) -> None:
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.send(None)
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(2)

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
