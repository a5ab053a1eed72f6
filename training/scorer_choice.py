"""Which scorer a log gets (`--scorer-objective auto`, the default): the linear softmax,
or LightGBM's lambdarank trees only where they rank this log's later weeks better beyond
noise.

Trees find interactions a linear score cannot (on the mailing lists +0.030 NDCG@10 in
the protocol), but they cost the service ~1.5 ms of CPU a Rank call more (100x the
linear scorer's) and gain nothing on most logs. So the choice is measured, per log, on
the scorer's own examples (its inner windows before the split: never an evaluated week),
forward in time as the protocol judges: the windows, oldest first, are cut into up to
BLOCKS consecutive blocks; each block after the first is ranked by both objectives fitted
on the blocks before it (their sampled rows), over *all* its requests' candidates as the
service ranks them, and scored by NDCG@10 among the candidates (ideal: the request's
engaged candidates, at most 10). The trees are chosen when the paired difference's bootstrap
interval lies above zero; on a tie, or with one window and so nothing later to judge,
the cheaper linear scorer stays. The figures go into the scorer's info and the report.

Why forward and not folds of requests: a week's popular posts are positives for many of
its users with the very same post features, so trees fitted on some of a week's
requests recognise those posts in the others. Dealt into random folds, the Reddit log's
requests said +0.053 [+0.045, +0.063] for 200 trees; the protocol, which ranks later
weeks, says -0.003 (docs/training.md, "The scorer's objective, chosen per log").
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from core.scoring import LinearScorer
from training.evaluate import IDEAL_DCG10, bootstrap_ci, dcg10_of_rows, verdict
from training.params import ScorerParams
from training.scorer import fit_scorer

BLOCKS = 4
BOOTSTRAP = 1000
CANDIDATES = ("softmax", "lambdarank")


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
        for name in CANDIDATES:
            scorer = fit_scorer(X[train], y[train], requests[train], replace(params, objective=name), {})
            scores = np.asarray(scorer.score(X[test]), dtype=np.float64)
            judged[name].append(request_ndcg10(requests[test], y[test], scores, posts[test]))
    soft = np.concatenate(judged["softmax"]) if judged["softmax"] else np.empty(0)
    trees = np.concatenate(judged["lambdarank"]) if judged["lambdarank"] else np.empty(0)
    mask = ~np.isnan(soft)
    if mask.sum() == 0:
        return "softmax", {"chosen": "softmax", "why": "no later request with an engaged candidate to judge on"}
    soft, trees = soft[mask], trees[mask]
    lo, hi = bootstrap_ci(trees - soft, BOOTSTRAP, np.random.default_rng(params.seed + 1))
    chosen = "lambdarank" if lo > 0 else "softmax"
    return chosen, {
        "chosen": chosen,
        "blocks": len(blocks),
        "windows": int(len(np.unique(ages))),
        "requests": int(mask.sum()),
        "ndcg10_softmax": round(float(soft.mean()), 4),
        "ndcg10_lambdarank": round(float(trees.mean()), 4),
        "lambdarank_minus_softmax": round(float((trees - soft).mean()), 4),
        "ci95": [round(lo, 4), round(hi, 4)],
        "verdict": verdict(lo, hi),
    }


def objective_of(scorer) -> str:
    """The objective a fitted scorer was fitted with (an affinity-only fallback: softmax's
    place), so later refits reuse the first point's choice instead of choosing again."""
    if isinstance(scorer, LinearScorer):
        return scorer.info.get("objective", "softmax") if scorer.info else "softmax"
    return "lambdarank"


def describe(choice: dict) -> str:
    """The choice in one line of the report."""
    if "ci95" not in choice:
        return f"{choice['chosen']} ({choice['why']})"
    lo, hi = choice["ci95"]
    return (
        f"{choice['chosen']}, chosen on the inner windows ({choice['windows']} in {choice['blocks']} blocks, "
        f"each later block ranked by fits on the earlier ones; {choice['requests']} requests): NDCG@10 "
        f"softmax {choice['ndcg10_softmax']:.4f}, lambdarank {choice['ndcg10_lambdarank']:.4f}, difference "
        f"{choice['lambdarank_minus_softmax']:+.4f} [{lo:+.4f}, {hi:+.4f}] {choice['verdict']}; the trees are "
        "taken only beyond noise"
    )
