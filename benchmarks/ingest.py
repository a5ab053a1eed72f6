"""The write path under load (issue 5): engagement ingest rate through FeedWriter, and
Rank latency while an ingest stream runs.

A dedicated loader process ('spawn', separate from the server and from the Rank loaders,
so that it can stream while they measure Rank) sends EngagementEvent messages over
loopback, in jobs bounded by seconds and by an event count:

  stream  `streams` concurrent nichefeed.v1.FeedWriter/StreamEngagements calls (one gRPC
          channel and TCP connection each), each of at most `stream_events` events, one
          after another until the job's seconds are up (a stream in flight at the deadline
          is ended there: its iterator stops yielding). Events/s = sum of the responses'
          `applied` / the job's wall time; the time of every stream is kept.
  batches the same streams through StreamEngagementBatches, `batch` events a message.
  unary   `callers` concurrent WriteEngagements calls of `batch` events each, closed loop.
  graph   `callers` concurrent CommunityGraph/WriteGraph calls of `batch` graph events each
          (joins, leaves, mutes, unmutes in equal shares, ingest users x the world's
          communities), closed loop.

Events: unique event_ids (run token + job + caller + counter), user ids drawn uniformly
from users reserved for ingest (never used by the Rank callers of the same run, so the
seen sets the engagements grow do not change what Rank filters for its users), post ids
of the bench world drawn by popularity (the bundle's view counts + 1), kinds in a
feed-like mix (KIND_MIX). ts = 0: the server stamps them with its wall clock.

Every write mutates Redis (idempotency markers, counters, engager statistics, seen sets,
the live stream and the event log): benchmarks/run.py therefore runs this section last,
against a scratch copy of the world's Redis that is deleted afterwards (see
benchmarks/worlds.py, BenchWorld.scratch_redis), never against the world's own Redis.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import threading
import time

import numpy as np

from benchmarks.load import serve_jobs

RPC_TIMEOUT_S = 120.0  # a stream of stream_events events; bounded anyway by the job's seconds

# Share of each engagement kind: mostly views, some positive engagement, a few negatives.
KIND_MIX = {"VIEW": 0.80, "LIKE": 0.10, "COMMENT": 0.03, "SHARE": 0.015, "SAVE": 0.03, "HIDE": 0.02, "REPORT": 0.005}


# --------------------------------------------------------------------------------------
# Inside the ingest loader process
# --------------------------------------------------------------------------------------
class _World:
    """What events are drawn from (sent once per bench world with a 'setup' job)."""

    def __init__(self, setup: dict):
        from nichefeed.v1 import graph_pb2, writes_pb2

        self.users = list(setup["users"])
        self.communities = np.load(os.path.join(setup["bundle"], "community_ids.npy")).tolist()
        self.graph_ops = [
            graph_pb2.GRAPH_OP_JOIN,
            graph_pb2.GRAPH_OP_LEAVE,
            graph_pb2.GRAPH_OP_MUTE,
            graph_pb2.GRAPH_OP_UNMUTE,
        ]
        self.GraphEvent = graph_pb2.GraphEvent
        self.GraphRequest = graph_pb2.WriteGraphRequest
        self.post_ids = np.load(os.path.join(setup["bundle"], "post_ids.npy"), mmap_mode="r")
        weights = None
        views = os.path.join(setup["bundle"], "post_views.npy")
        if os.path.isfile(views):
            try:
                v = np.asarray(np.load(views), dtype=np.float64)
                if v.shape == (len(self.post_ids),):
                    weights = v + 1.0
            except (OSError, ValueError):
                weights = None
        self.post_cdf = None if weights is None else np.cumsum(weights / weights.sum())
        self.kinds = np.array([getattr(writes_pb2, k) for k in KIND_MIX], dtype=np.int64)
        self.kind_p = np.array(list(KIND_MIX.values()), dtype=np.float64)
        self.kind_p /= self.kind_p.sum()
        self.token = setup["token"]
        self.Event = writes_pb2.EngagementEvent
        self.Request = writes_pb2.WriteEngagementsRequest

    def events(self, rng: np.random.Generator, n: int, prefix: str, start: int) -> list:
        if self.post_cdf is None:
            posts = rng.integers(0, len(self.post_ids), size=n)
        else:
            posts = np.minimum(np.searchsorted(self.post_cdf, rng.random(n)), len(self.post_ids) - 1)
        users = rng.integers(0, len(self.users), size=n)
        kinds = rng.choice(self.kinds, size=n, p=self.kind_p)
        ev, pid, uid = self.Event, self.post_ids, self.users
        return [
            ev(event_id=f"{prefix}{start + i}", user_id=uid[u], post_id=str(pid[p]), kind=int(k))
            for i, (u, p, k) in enumerate(zip(users.tolist(), posts.tolist(), kinds.tolist()))
        ]

    def graph_events(self, rng: np.random.Generator, n: int, prefix: str, start: int) -> list:
        users = rng.integers(0, len(self.users), size=n).tolist()
        comms = rng.integers(0, len(self.communities), size=n).tolist()
        ops = rng.integers(0, len(self.graph_ops), size=n).tolist()
        ev, uid, cid, gop = self.GraphEvent, self.users, self.communities, self.graph_ops
        return [
            ev(event_id=f"{prefix}{start + i}", op=gop[o], user_id=uid[u], community_id=cid[c])
            for i, (u, c, o) in enumerate(zip(users, comms, ops))
        ]


def _channel(addr: str):
    import grpc

    # Own subchannel pool: every caller gets its own TCP connection (SO_REUSEPORT spreads them).
    return grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])


def _run_job(job: dict, world: _World, conn) -> dict:
    import grpc

    from nichefeed.v1 import graph_pb2_grpc, writes_pb2_grpc

    op, k = job["op"], job["concurrency"]
    max_events = job["max_events"]
    per_call = job["stream_events"] if op in ("stream", "batches") else job["batch"]
    channels = [_channel(job["grpc"]) for _ in range(k)]
    for ch in channels:
        grpc.channel_ready_future(ch).result(timeout=10)
    stubs = [writes_pb2_grpc.FeedWriterStub(ch) for ch in channels]
    graph_stubs = [graph_pb2_grpc.CommunityGraphStub(ch) for ch in channels]
    budget = [max_events]
    lock = threading.Lock()
    calls: list[list] = [[] for _ in range(k)]  # (seconds, events sent, applied, duplicates)
    errors: dict[str, int] = {}
    start = threading.Barrier(k + 1)
    deadline = [0.0]

    def take(n: int) -> int:
        with lock:
            n = min(n, budget[0])
            budget[0] -= n
            return n

    def caller(i: int) -> None:
        rng = np.random.default_rng(job["seed"] * 1000 + i)
        prefix = f"bench:{world.token}:{job['name']}:{i}:"
        sent_total = 0
        start.wait()
        end = deadline[0]
        while time.perf_counter() < end:
            n = take(per_call)
            if n <= 0:
                break
            make = world.graph_events if op == "graph" else world.events
            events = make(rng, n, prefix, sent_total)  # built before the call's timer
            sent = [0]
            t0 = time.perf_counter()
            try:
                if op == "stream":

                    def gen(events=events, sent=sent):
                        for j, e in enumerate(events):
                            if j % 64 == 0 and time.perf_counter() >= end:
                                return  # the job's time is up: end this stream here
                            sent[0] = j + 1
                            yield e

                    resp = stubs[i].StreamEngagements(gen(), timeout=RPC_TIMEOUT_S)
                elif op == "batches":

                    def gen_batches(events=events, sent=sent, size=job["batch"]):
                        for j in range(0, len(events), size):
                            if time.perf_counter() >= end:
                                return  # the job's time is up: end this stream here
                            sent[0] = min(j + size, len(events))
                            yield world.Request(events=events[j : j + size])

                    resp = stubs[i].StreamEngagementBatches(gen_batches(), timeout=RPC_TIMEOUT_S)
                elif op == "graph":
                    sent[0] = n
                    resp = graph_stubs[i].WriteGraph(world.GraphRequest(events=events), timeout=RPC_TIMEOUT_S)
                else:
                    sent[0] = n
                    resp = stubs[i].WriteEngagements(world.Request(events=events), timeout=RPC_TIMEOUT_S)
            except grpc.RpcError as exc:
                with lock:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                    if len(errors) == 1 and "first_error" not in job:
                        job["first_error"] = f"{exc.code().name}: {exc.details()}"[:300]
                sent_total += n
                continue
            calls[i].append((time.perf_counter() - t0, sent[0], resp.applied, resp.duplicates))
            sent_total += n

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(k)]
    for t in threads:
        t.start()
    conn.send({"ready": True})
    t0 = time.perf_counter()
    deadline[0] = t0 + job["seconds"]
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for ch in channels:
        ch.close()
    return {
        "elapsed": elapsed,
        "calls": [c for per in calls for c in per],
        "errors": errors,
        "first_error": job.get("first_error"),
    }


def _ingest_main(conn) -> None:
    state: dict = {}

    def handle(job: dict) -> dict:
        if job["op"] == "setup":
            state["world"] = _World(job)
            return {"ok": True}
        return _run_job(job, state.get("world"), conn)

    serve_jobs(conn, handle)


# --------------------------------------------------------------------------------------
# In the bench process
# --------------------------------------------------------------------------------------
def summarize(op: str, concurrency: int, raw: dict) -> dict:
    calls = raw["calls"]
    secs = np.array([c[0] for c in calls]) * 1000.0
    sent = sum(c[1] for c in calls)
    applied = sum(c[2] for c in calls)
    out = {
        "op": op,
        "concurrency": concurrency,
        "seconds": round(raw["elapsed"], 2),
        "calls": len(calls),
        "events_sent": int(sent),
        "applied": int(applied),
        "duplicates": int(sum(c[3] for c in calls)),
        "events_per_s": round(applied / raw["elapsed"], 1) if raw["elapsed"] > 0 else None,
        "errors": raw["errors"],
        "first_error": raw.get("first_error"),
    }
    if len(calls):
        p = np.percentile(secs, [50, 99])
        out.update(
            {
                "call_p50_ms": round(float(p[0]), 1),
                "call_p99_ms": round(float(p[1]), 1),
                "call_max_ms": round(float(secs.max()), 1),
                "events_per_call": round(sent / len(calls), 1),
            }
        )
        # per-call rate: what one stream / one caller sustains on its own
        rates = [c[2] / c[0] for c in calls if c[0] > 0]
        out["events_per_s_per_call_p50"] = round(float(np.median(rates)), 1) if rates else None
    return out


class IngestLoader:
    """One loader process for write jobs; start() returns once the job is about to send."""

    def __init__(self):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_ingest_main, args=(child,), daemon=True, name="bench-ingest")
        self.proc.start()
        child.close()
        self._job: dict | None = None
        self._jobs = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _recv(self, timeout: float) -> dict:
        if not self.conn.poll(timeout):
            raise RuntimeError(f"ingest loader did not answer within {timeout:.0f}s")
        reply = self.conn.recv()
        if "error" in reply:
            raise RuntimeError(f"ingest load failed: {reply['error']}")
        return reply

    def setup(self, bundle_dir, users: list[str], token: str) -> None:
        self.conn.send({"op": "setup", "bundle": str(bundle_dir), "users": users, "token": token})
        self._recv(120)

    def start(
        self,
        op: str,
        grpc_addr: str,
        concurrency: int,
        seconds: float,
        *,
        stream_events: int = 10_000,
        batch: int = 500,
        max_events: int = 1_000_000,
    ) -> None:
        self._jobs += 1
        self._job = {
            "op": op,
            "grpc": grpc_addr,
            "concurrency": concurrency,
            "seconds": seconds,
            "stream_events": stream_events,
            "batch": batch,
            "max_events": max_events,
            "seed": self._jobs,
            "name": f"j{self._jobs}{op[0]}",
        }
        self.conn.send(self._job)
        self._recv(60)  # {"ready": True}: channels connected, callers about to start

    def wait(self) -> dict:
        job, self._job = self._job, None
        raw = self._recv(job["seconds"] + RPC_TIMEOUT_S + 30)
        return summarize(job["op"], job["concurrency"], raw)

    def run(self, op: str, grpc_addr: str, concurrency: int, seconds: float, **kw) -> dict:
        self.start(op, grpc_addr, concurrency, seconds, **kw)
        return self.wait()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2)

    def __enter__(self) -> IngestLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
