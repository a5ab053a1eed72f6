"""CPU per Rank call, stage by stage, in process: where the server's CPU goes.

`python -m benchmarks.cpu_stages --world 100k [--requests 400] [--live 30000]`

The world's bundle and bench redis-server (benchmarks/worlds.py, built by `make bench`),
one in-process Service (not started: no gRPC, no background threads), its pipeline run
on home feeds of sampled users (limit 20, the Rank bench's request) at the bundle's data
end. Each stage is timed with the thread's CPU clock (time.thread_time_ns), so waiting
for Redis costs nothing and other processes on the machine move the figures far less
than wall time. `--live N` puts N posts in the live index first, as the write path
leaves it after engagement (bundle posts whose vectors moved: the ingest bench's 30k).
Each request's wall time (Redis' time included) is reported too, as p50 and p90, and its
wall time minus its thread CPU (what it waited for, mostly Redis), as p50 and mean;
`--no-prefetch` reads every candidate's record after retrieve, as before the MGET was
sent ahead of the FAISS search (service/stages/retrieve.py), to measure that overlap;
`--numpy-trees` scores the blend's trees in numpy instead of with the compiled kernel
(core/quickscorer.c), to measure that one in a single checkout.

The answers (every request's ranked ids) are hashed and printed, and written with
`--answers FILE`; `--compare FILE` fails if any differ: a hot-path optimisation must
not change what a user sees. Rounds alternate with the others' on a busy machine, so the
lowest round's mean per stage is reported beside the mean of all rounds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from benchmarks.worlds import WORLDS, BenchWorld
from core import contract
from service.app import Service
from service.config import Config
from service.live_index import LiveIndex
from service.pipeline import RankContext, RankQuery


def live_index(bundle, n: int, seed: int = 5) -> LiveIndex | None:
    """n bundle posts whose vectors moved (what engagement writes to the live stream)."""
    if n <= 0:
        return None
    rng = np.random.default_rng(seed)
    index = LiveIndex(bundle.version, bundle.index.d, post_row=bundle.post_row)
    vectors = np.asarray(bundle[contract.POST_VECTORS_FILE])
    rows = rng.choice(len(bundle.post_ids), size=n, replace=False)
    for i, row in enumerate(rows.tolist()):
        vec = (vectors[row] + rng.normal(0, 0.01, vectors.shape[1])).astype("<f4")
        index.apply(
            f"{i + 1}-0",
            {contract.LIVE_POST.encode(): bundle.post_ids[row].encode(), contract.LIVE_VECTOR.encode(): vec.tobytes()},
        )
    index.resolve_rows()
    return index


def run(args) -> dict:
    world = BenchWorld(WORLDS[args.world])
    world.ensure_built()
    url = world.start_redis()
    try:
        # A generous Redis budget: on a busy machine a 50 ms round trip would degrade a
        # request (answered from memory), which changes its answer and its cost.
        cfg = Config(
            grpc_addr="127.0.0.1:0",
            metrics_addr="",
            models_dir=world.models_dir,
            candidates=args.candidates,
            redis_timeout_ms=5000,
        )
        svc = Service(cfg, url)
        b = svc.holder.current
        live = live_index(b, args.live)
        rng = np.random.default_rng(args.seed)
        users = b.user_ids.take(rng.choice(len(b.user_ids), size=args.requests, replace=False))
        stages = svc.pipeline.stages
        if args.no_prefetch:  # the candidates' MGET in hydrate_candidates alone, as before hotpath3
            for stage in stages:
                if stage.name == "retrieve":
                    stage.store = None
        if args.numpy_trees:  # the blend's trees in numpy, as before core/quickscorer.c
            trees = getattr(b.scorer, "trees", b.scorer)
            if getattr(trees, "ensemble", None) is not None:
                trees.ensemble.kernel = "numpy"
        now = b.data_end_ts
        walls: list[float] = []  # wall seconds of each measured request (Redis' time included)
        waits: list[float] = []  # each measured request's wall minus its thread CPU: waiting on Redis

        degraded = []

        def one(user: str, cpu: np.ndarray | None) -> list[str]:
            ctx = RankContext(query=RankQuery(user_id=user, limit=args.limit), bundle=b, now=now, live=live)
            w0, c0 = time.perf_counter(), time.thread_time_ns()
            for i, stage in enumerate(stages):
                t0 = time.thread_time_ns()
                stage.run(ctx)
                if cpu is not None:
                    cpu[i] += time.thread_time_ns() - t0
            if cpu is not None:
                walls.append(time.perf_counter() - w0)
                waits.append(walls[-1] - (time.thread_time_ns() - c0) / 1e9)
            if ctx.degraded:
                degraded.append((user, ctx.degraded))
            return [item.post_id for item in ctx.items]

        for user in users[: min(50, len(users))]:  # warm-up: page cache, FAISS lists, pools
            one(user, None)
        rounds = []
        answers: dict[str, list[str]] = {}
        for _ in range(args.rounds):
            cpu = np.zeros(len(stages), dtype=np.int64)
            t0 = time.thread_time_ns()
            for user in users:
                answers[user] = one(user, cpu)
            total = time.thread_time_ns() - t0
            rounds.append((cpu / len(users) / 1e6, total / len(users) / 1e6))
        svc.store.close()
        svc.write_client.close()
    finally:
        world.stop()
    digest = hashlib.sha256(json.dumps(answers, sort_keys=True).encode()).hexdigest()[:16]
    names = [s.name for s in stages]
    best = min(range(len(rounds)), key=lambda r: rounds[r][1])
    return {
        "world": args.world,
        "requests": args.requests,
        "rounds": args.rounds,
        "live": args.live,
        "candidates": args.candidates,
        "stages_ms_mean": {n: round(float(np.mean([r[0][i] for r in rounds])), 3) for i, n in enumerate(names)},
        "stages_ms_best_round": {n: round(float(rounds[best][0][i]), 3) for i, n in enumerate(names)},
        "total_ms_mean": round(float(np.mean([r[1] for r in rounds])), 3),
        "total_ms_best_round": round(float(rounds[best][1]), 3),
        "wall_ms_p50": round(float(np.percentile(walls, 50)) * 1e3, 3),
        "wall_ms_p90": round(float(np.percentile(walls, 90)) * 1e3, 3),
        "wait_ms_p50": round(float(np.percentile(waits, 50)) * 1e3, 3),
        "wait_ms_mean": round(float(np.mean(waits)) * 1e3, 3),
        "prefetch": not args.no_prefetch,
        "answers_sha256": digest,
        "degraded": len(degraded),
        "answers": answers,
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", default="100k", choices=sorted(WORLDS))
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=500)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--live", type=int, default=0, help="posts in the live index (moved bundle posts)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument(
        "--no-prefetch",
        action="store_true",
        help="read every candidate's record after retrieve (no MGET sent before the FAISS search)",
    )
    ap.add_argument(
        "--numpy-trees",
        action="store_true",
        help="score the bundle's trees in numpy, not with the compiled kernel (core/quickscorer.c)",
    )
    ap.add_argument("--answers", type=Path, help="write every request's ranked ids here")
    ap.add_argument("--compare", type=Path, help="fail if the answers differ from this file's")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    out = run(args)
    print(f"world {out['world']}, {out['requests']} home feeds x {out['rounds']} rounds, live index {out['live']}")
    print(f"{'stage':<20} {'CPU ms/call (mean)':>20} {'(best round)':>14}")
    for name, ms in out["stages_ms_mean"].items():
        print(f"{name:<20} {ms:>20.3f} {out['stages_ms_best_round'][name]:>14.3f}")
    print(f"{'total':<20} {out['total_ms_mean']:>20.3f} {out['total_ms_best_round']:>14.3f}")
    print(f"wall ms per request (Redis' time included): p50 {out['wall_ms_p50']:.3f}, p90 {out['wall_ms_p90']:.3f}")
    print(f"wall minus thread CPU per request (waiting): p50 {out['wait_ms_p50']:.3f}, mean {out['wait_ms_mean']:.3f}")
    print(f"answers sha256 {out['answers_sha256']}; load average {out['load_average'][0]:.2f}")
    if out["degraded"]:
        print(f"{out['degraded']} requests degraded (Redis too slow): their answers came from memory", file=sys.stderr)
    answers = out.pop("answers")
    if args.answers:
        args.answers.write_text(json.dumps(answers, sort_keys=True))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    if args.compare:
        expected = json.loads(args.compare.read_text())
        differ = [u for u in expected if expected[u] != answers.get(u)]
        if differ or set(expected) != set(answers):
            print(f"ANSWERS DIFFER for {len(differ)} of {len(expected)} requests, first {differ[:1]}", file=sys.stderr)
            return 1
        print(f"answers identical to {args.compare} ({len(expected)} requests)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
