"""What a tree-ensemble scorer would cost per Rank call: LightGBM's predict of one
request's candidates, beside the linear scorer the service runs.

`python -m benchmarks.ranker_predict [--rows 500] [--trees 50,100,200] [--calls 300]`

docs/training.md ("Would another ranker do better?") weighs a lambdarank scorer's
ranking gain against its hot-path cost; this measures the cost. A lambdarank model of
15 leaves per tree (training's own settings, training/scorer.py: learning rate 10 /
trees) is fitted on generated rows with the service's number of features, then requests
of `--rows` candidates are scored `--calls` times on one thread, timed with the process
CPU clock (time.process_time), so other work on the machine moves it little. The calls
cycle through 40 different requests, as a server's do: one request scored again and again
lets the CPU's branch predictor learn the trees' paths (at 100 candidates that made them
look 1.6x cheaper). The linear scorer's row is
core.scoring.LinearScorer.score on the same matrix; each ensemble is timed as LightGBM's
predict and as core/tree_ensemble.py's evaluation of the same trees, compiled
(core/quickscorer.c) and in numpy (the same doubles, checked here on every request;
core.scoring.TreeScorer serves the compiled one where the install built it), and its
"blend" row is core.scoring.BlendScorer.score (the linear scorer and those trees, each
over its scale, averaged), what the service runs for a blend bundle.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before lightgbm loads its OpenMP runtime

import numpy as np

from core.scoring import FEATURES, BlendScorer, LinearScorer, TreeScorer
from training.scorer import evaluation_matches_lightgbm, lambdarank_booster


def cpu_ms_per_call(fn, requests: list[np.ndarray], calls: int) -> float:
    fn(requests[0])  # warm: first-call setup is not a per-request cost
    start = time.process_time()
    for i in range(calls):
        fn(requests[i % len(requests)])
    return (time.process_time() - start) / calls * 1e3


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=500, help="candidates of one request")
    ap.add_argument("--trees", default="50,100,200", help="ensemble sizes to time")
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    d, requests, per = len(FEATURES), 400, 100
    X = rng.normal(size=(requests * per, d)).astype(np.float32)
    # Labels with interactions, so the trees grow to their 15 leaves as on real logs.
    logit = X[:, 0] + X[:, 1] * X[:, 2] - np.abs(X[:, 3]) + rng.normal(size=len(X))
    y = (logit > 2.0).astype(np.float64)
    group = np.repeat(np.arange(requests), per)
    scored = [X[i * args.rows : (i + 1) * args.rows] for i in range(len(X) // args.rows)][:40]
    as_float64 = [np.ascontiguousarray(r, dtype=np.float64) for r in scored]
    linear = LinearScorer(rng.normal(size=d).astype(np.float32), np.zeros(d, np.float32), np.ones(d, np.float32))
    print(f"requests of {args.rows} candidates x {d} features, CPU ms per call on one thread:")
    ms = cpu_ms_per_call(linear.score, scored, args.calls)
    print(f"  linear scorer (served)                                     {ms:.3f}")
    for trees in (int(t) for t in args.trees.split(",")):
        booster = lambdarank_booster(X, y, group, seed=0, trees=trees)
        ms = cpu_ms_per_call(lambda r, b=booster: b.predict(r, num_threads=1), as_float64, args.calls)
        print(f"  lambdarank, {trees:>4} trees of 15 leaves, LightGBM's predict   {ms:.3f}")
        trees_scorer = TreeScorer(booster.model_to_string(), FEATURES)
        # training's own check, on the probes and on every request timed here
        if trees_scorer.evaluator == "lightgbm" or not evaluation_matches_lightgbm(
            trees_scorer, booster, np.concatenate(scored), fitted_rows=len(scored) * args.rows
        ):
            raise SystemExit("core/tree_ensemble.py does not reproduce LightGBM's predict on these requests")
        for kernel, score in trees_scorer.ensemble.kernels().items():
            ms = cpu_ms_per_call(score, scored, args.calls)
            served = " (served)" if kernel == trees_scorer.evaluator else ""
            print(f"  lambdarank, {trees:>4} trees of 15 leaves, {kernel + served:<20}  {ms:.3f}")
        blend = BlendScorer(linear, trees_scorer)
        ms = cpu_ms_per_call(blend.score, scored, args.calls)
        print(f"  blend, linear + {trees:>4} trees (served)                      {ms:.3f}")


if __name__ == "__main__":
    main()
