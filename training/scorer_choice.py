"""Which scorer a log gets under `--scorer-objective auto`: the linear softmax,
or LightGBM's lambdarank trees, or the two blended (core.scoring.BlendScorer), the last
two only where they rank this log's later weeks better beyond noise.

Trees find interactions a linear score cannot (on the mailing lists +0.030 NDCG@10 in
the protocol), but they cost the service ~0.6 ms of CPU a Rank call more (30x the
linear scorer's) and gain nothing on most logs. So the choice is measured, per log, on
the scorer's own examples (its inner windows before the split: never an evaluated week),
forward in time as the protocol judges: the windows, oldest first, are cut into up to
BLOCKS consecutive blocks; each block after the first is ranked by both objectives fitted
on the blocks before it (their sampled rows), over *all* its requests' candidates as the
service ranks them, and scored by NDCG@10 among the candidates (ideal: the request's
engaged candidates, at most 10); the blend is ranked by the same two fits' scores, mixed
as it serves. Of the trees and the blend, those whose paired difference to the softmax
has its bootstrap interval above zero qualify, and the one with the larger mean gain is
chosen; when neither qualifies, or with one window and so nothing later to judge, the
cheaper linear scorer stays. The figures go into the scorer's info and the report.

Not the default since the blend became it: judged by the protocol on later weeks, the
blend was ahead of the softmax beyond noise on logs where this measure had it behind
beyond noise (Reddit's last 70 days, quantumcomputing): a few inner weeks are moved more
by which weeks they are than by the objective (docs/training.md, "The scorer's objective").

Why forward and not folds of requests: a week's popular posts are positives for many of
its users with the very same post features, so trees fitted on some of a week's
requests recognise those posts in the others. Dealt into random folds, the Reddit log's
requests said +0.053 [+0.045, +0.063] for 200 trees; the protocol, which ranks later
weeks, says -0.003 (docs/training.md, "The scorer's objective, chosen per log").
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from core.scoring import BlendScorer, LinearScorer, TreeScorer
from training.evaluate import IDEAL_DCG10, bootstrap_ci, dcg10_of_rows, verdict
from training.params import ScorerParams
from training.scorer import fit_scorer

BLOCKS = 4
BOOTSTRAP = 1000
CANDIDATES = ("softmax", "lambdarank", "blend")
CHALLENGERS = CANDIDATES[1:]  # what must beat the softmax beyond noise to be served


def request_ndcg10(requests: np.ndarray, y: np.ndarray, scores: np.ndarray, posts: np.ndarray) -> np.ndarray:
    """NDCG@10 of each request (in np.unique(requests) order) ranked by score, ties by
    post row as the service breaks them; the ideal puts the request's engaged rows first.
    A request with no engaged row scores nan (nothing to rank it on)."""
    _, dcg, positives = dcg10_of_rows(requests, y, scores, posts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(positives > 0, dcg / IDEAL_DCG10[np.minimum(positives, 10)], np.nan)


def time_blocks(ages: np.ndarray) -> list[np.ndarray]:
    """The distinct window ages (0 = the newest window), oldest first, cut into at most
    BLOCKS consecutive blocks."""
    oldest_first = np.unique(ages)[::-1]
    return [b for b in np.array_split(oldest_first, min(BLOCKS, len(oldest_first))) if len(b)]


def choose_objective(
    X: np.ndarray,
    y: np.ndarray,
    requests: np.ndarray,
    posts: np.ndarray,
    ages: np.ndarray,
    keep: np.ndarray,
    params: ScorerParams,
) -> tuple[str, dict]:
    """(objective, the measurement) for the candidates of the scorer's requests: X, y,
    requests, posts, ages (each row's window, 0 the newest) are every candidate's row;
    `keep` the rows a fit samples (its positives and sampled negatives, training_examples)."""
    blocks = time_blocks(ages)
    if len(blocks) < 2:
        return "softmax", {"chosen": "softmax", "why": "one inner window: no later week to judge the trees on"}
    block_of_age = np.zeros(int(ages.max()) + 1, dtype=np.int64)  # ages are window indices
    for b, ages_in in enumerate(blocks):
        block_of_age[ages_in] = b
    block = block_of_age[ages]  # each row's block, without a Python step per candidate
    judged = {name: [] for name in CANDIDATES}
    for b in range(1, len(blocks)):
        train = keep[block[keep] < b]
        test = np.flatnonzero(block == b)
        if y[train].sum() == 0 or y[train].sum() == len(train):
            continue
        fitted = {
            name: fit_scorer(X[train], y[train], requests[train], replace(params, objective=name), {})
            for name in CANDIDATES[:2]
        }
        soft, trees = fitted["softmax"], fitted["lambdarank"]
        fitted["blend"] = BlendScorer(soft, trees, BlendScorer.scales_on(soft, trees, X[train]))
        for name in CANDIDATES:
            scores = np.asarray(fitted[name].score(X[test]), dtype=np.float64)
            judged[name].append(request_ndcg10(requests[test], y[test], scores, posts[test]))
    ndcg = {name: np.concatenate(v) if v else np.empty(0) for name, v in judged.items()}
    mask = ~np.isnan(ndcg["softmax"])
    if mask.sum() == 0:
        return "softmax", {"chosen": "softmax", "why": "no later request with an engaged candidate to judge on"}
    ndcg = {name: v[mask] for name, v in ndcg.items()}
    measured = {
        "blocks": len(blocks),
        "windows": int(len(np.unique(ages))),
        "requests": int(mask.sum()),
        **{f"ndcg10_{name}": round(float(v.mean()), 4) for name, v in ndcg.items()},
    }
    gains = {}
    for name in CHALLENGERS:
        diff = ndcg[name] - ndcg["softmax"]
        lo, hi = bootstrap_ci(diff, BOOTSTRAP, np.random.default_rng(params.seed + 1))
        prefix = "" if name == "lambdarank" else f"{name}_"  # the trees' keys predate the blend
        measured[f"{name}_minus_softmax"] = round(float(diff.mean()), 4)
        measured[f"{prefix}ci95"] = [round(lo, 4), round(hi, 4)]
        measured[f"{prefix}verdict"] = verdict(lo, hi)
        if lo > 0:
            gains[name] = float(diff.mean())
    chosen = max(gains, key=gains.get) if gains else "softmax"
    return chosen, {"chosen": chosen, **measured}


def objective_of(scorer) -> str:
    """The objective a fitted scorer was fitted with (an affinity-only fallback: softmax's
    place), so later refits reuse the first point's choice instead of choosing again."""
    if isinstance(scorer, LinearScorer):
        return scorer.info.get("objective", "softmax") if scorer.info else "softmax"
    if isinstance(scorer, TreeScorer):
        return "lambdarank"
    return "blend"


def describe(choice: dict) -> str:
    """The choice in one line of the report."""
    if "ci95" not in choice:
        return f"{choice['chosen']} ({choice['why']})"
    against = []
    for name in CHALLENGERS:
        prefix = "" if name == "lambdarank" else f"{name}_"
        if f"{prefix}ci95" not in choice:  # a bundle chosen before the blend was a candidate
            continue
        lo, hi = choice[f"{prefix}ci95"]
        against.append(
            f"{name} {choice[f'ndcg10_{name}']:.4f} ({choice[f'{name}_minus_softmax']:+.4f} [{lo:+.4f}, {hi:+.4f}] "
            f"{choice[f'{prefix}verdict']})"
        )
    return (
        f"{choice['chosen']}, chosen on the inner windows ({choice['windows']} in {choice['blocks']} blocks, "
        f"each later block ranked by fits on the earlier ones; {choice['requests']} requests): NDCG@10 "
        f"softmax {choice['ndcg10_softmax']:.4f}, " + ", ".join(against) + "; the others are taken over the "
        "softmax only beyond noise"
    )
