"""Would another ranker do better on these candidates? (`python -m training ranker-check`)

The pipeline ranks its candidates with a linear scorer (core.scoring). Whether a
gradient-boosted ranker, or one more feature, would rank them better is a question about
one data set, answered here on the bundle's own evaluation: its evaluation is replayed
(training/reevaluate.py), the pipeline's candidates at every split point are captured
with their features and labels (training/candidate_capture.py), and each ranker below is
fitted leave-one-point-out (on the other points' candidates, so it never sees the week it
ranks) and judged on the point left out, by NDCG@10 over the longest window:

  scorer                       the bundle's own scorer at each point: the pipeline as the
                               report judged it (its NDCG@10 is the report's, value for value)
  linear                       the same softmax fit (training/scorer.py), leave-one-point-out
  linear + ease                with EASE's score of the pair and its rank in the request as
                               two more features (the EASE baseline of the point)
  lambdarank                   LightGBM's lambdarank over the same features
  lambdarank + ease            and with EASE's two features

`linear` is the like-for-like reference of the other three: fitted on the same rows, it
differs from them only in the model or the features; `scorer` differs in what it was
fitted on too (earlier inner windows). Differences are paired over the evaluated users,
with a bootstrap interval. A diagnosis, not the protocol: the leave-one-point-out fits
learn from weeks after the one they rank.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core import contract
from core.scoring import FEATURES, LinearScorer, load_scorer, request_rank
from training import candidate_capture
from training.evaluate import IDEAL_DCG10, bootstrap_ci, dcg10_of_rows, verdict
from training.scorer import LAMBDARANK, fit_softmax, lambdarank_booster

EASE_FEATURES = ("ease", "ease_rank")
NEGATIVES_PER_REQUEST = 100  # as the scorer's fit samples them (ScorerParams.negatives_per_user)
METHODS = ("scorer", "linear", "linear + ease", "lambdarank", "lambdarank + ease")
REFERENCE = "linear"


def with_ease(t: dict) -> np.ndarray:
    """X plus EASE's score (0 outside its items) and log(1 + its rank in the request),
    the items outside it ranked after every item inside."""
    covered = t["ease"] > -1e8
    score = np.where(covered, t["ease"], 0.0).astype(np.float32)
    rank = np.log1p(request_rank(np.where(covered, t["ease"], -np.inf), t["users"]))
    return np.column_stack([t["X"], score, rank]).astype(np.float32)


def ndcg10(t: dict, scores: np.ndarray) -> np.ndarray:
    """NDCG@10 of each evaluated user (t["req_users"] order), ranking by score, ties by
    row as rank_pipeline breaks them; the ideal from all the user's targets in the window
    (t["n_targets"]), candidates or not; a user without candidates scores 0."""
    ranked, dcg, _ = dcg10_of_rows(t["users"], t["y"], scores, t["posts"])
    by_user = dict(zip(ranked.tolist(), dcg.tolist()))
    got = np.array([by_user.get(u, 0.0) for u in t["req_users"].tolist()])
    n = t["n_targets"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, got / IDEAL_DCG10[np.minimum(n, 10)], 0.0)


def training_rows(t: dict, X: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A point's requests with a positive: their positives and at most
    NEGATIVES_PER_REQUEST sampled negatives; (X, y, request key)."""
    users, y = t["users"], t["y"]
    keep = []
    for user in np.unique(users):
        rows = np.flatnonzero(users == user)
        pos, neg = rows[y[rows] > 0], rows[y[rows] == 0]
        if len(pos) == 0:
            continue
        if len(neg) > NEGATIVES_PER_REQUEST:
            neg = rng.choice(neg, NEGATIVES_PER_REQUEST, replace=False)
        keep.append(np.sort(np.concatenate([pos, neg])))
    keep = np.concatenate(keep) if keep else np.empty(0, np.int64)
    return X[keep], y[keep], users[keep]


def pooled(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """Several points' rows as one set, requests keyed apart per point and kept together."""
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts]).astype(np.float64)
    keys = np.concatenate([p[2] + np.int64(i) * (1 << 40) for i, p in enumerate(parts)])
    order = np.argsort(keys, kind="stable")
    return X[order], y[order], keys[order]


def fit_linear(parts, names: tuple[str, ...], l2: float):
    X, y, keys = pooled(parts)
    return LinearScorer(*fit_softmax(X, y, keys, l2, names)).score


def fit_lambdarank(parts, names: tuple[str, ...], seed: int):
    """The scorer's own lambdarank fit (training/scorer.py) on these rows."""
    booster = lambdarank_booster(*pooled(parts), seed, names)
    return lambda Z: booster.predict(np.asarray(Z, dtype=np.float64), num_threads=LAMBDARANK["num_threads"])


def require_two_points(points: int) -> None:
    if points < 2:
        raise ValueError(
            f"{points} split point: leave-one-point-out needs at least two (train with --split-points 2 or more)"
        )


def check(tables: list[dict], l2: float = 1.0, seed: int = 0, bootstrap: int = 1000) -> dict:
    """Every method's NDCG@10 per evaluated user, pooled over the points, and the paired
    differences; a report dict (markdown() prints it)."""
    require_two_points(len(tables))
    rng = np.random.default_rng(seed)
    plain = [t["X"] for t in tables]
    eased = [with_ease(t) for t in tables]
    rows = {
        "plain": [training_rows(t, X, rng) for t, X in zip(tables, plain)],
        "ease": [training_rows(t, X, rng) for t, X in zip(tables, eased)],
    }
    per_user = {m: [] for m in METHODS}
    per_point = {m: [] for m in METHODS}
    for j, t in enumerate(tables):
        others = {k: [r for i, r in enumerate(v) if i != j] for k, v in rows.items()}
        shipped = load_scorer(str(t["scorer"]))
        fitted = {
            "scorer": shipped.score,
            "linear": fit_linear(others["plain"], FEATURES, l2),
            "linear + ease": fit_linear(others["ease"], FEATURES + EASE_FEATURES, l2),
            "lambdarank": fit_lambdarank(others["plain"], FEATURES, seed),
            "lambdarank + ease": fit_lambdarank(others["ease"], FEATURES + EASE_FEATURES, seed),
        }
        for m in METHODS:
            X = eased[j] if m.endswith("ease") else plain[j]
            values = ndcg10(t, np.asarray(fitted[m](X), dtype=np.float64))
            per_user[m].append(values)
            per_point[m].append(round(float(values.mean()), 4))
    draws = np.random.default_rng(seed + 1)
    summary = {}
    for m in METHODS:
        v = np.concatenate(per_user[m])
        lo, hi = bootstrap_ci(v, bootstrap, draws)
        row = {"mean": float(v.mean()), "ci95": [lo, hi], "per_point": per_point[m]}
        for ref in ("scorer", REFERENCE):
            if m != ref:
                d = v - np.concatenate(per_user[ref])
                dlo, dhi = bootstrap_ci(d, bootstrap, draws)
                row[f"vs_{ref}"] = {"difference": float(d.mean()), "ci95": [dlo, dhi], "verdict": verdict(dlo, dhi)}
        summary[m] = row
    return {
        "users": int(sum(len(t["req_users"]) for t in tables)),
        "split_points": [int(t["split_ts"]) for t in tables],
        "methods": summary,
    }


def markdown(report: dict) -> str:
    lines = [
        f"NDCG@10 over the longest window, {len(report['split_points'])} split points pooled, "
        f"{report['users']} user-requests; each ranker but `scorer` fitted leave-one-point-out.",
        "",
        "| ranker | NDCG@10 [95%] | vs linear (same rows) | vs scorer (the report's pipeline) | per point |",
        "|---|---|---|---|---|",
    ]

    def diff(row, ref):
        d = row.get(f"vs_{ref}")
        if d is None:
            return "-"
        return f"{d['difference']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] {d['verdict']}"

    for name, row in report["methods"].items():
        cells = [
            name,
            f"{row['mean']:.4f} [{row['ci95'][0]:.4f}, {row['ci95'][1]:.4f}]",
            diff(row, REFERENCE),
            diff(row, "scorer"),
            " ".join(f"{v:.4f}" for v in row["per_point"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(bundle_dir: Path, data_dir: Path | None, capture_dir: Path) -> dict:
    """Replay the bundle's evaluation capturing its candidates into capture_dir, then check."""
    from training.reevaluate import replay

    # Before minutes of replay: a bundle judged at one point cannot be checked.
    manifest = json.loads((bundle_dir / contract.MANIFEST_FILE).read_text())
    require_two_points(len(manifest["params"]["split_points"]))
    capture_dir.mkdir(parents=True, exist_ok=True)
    for stale in capture_dir.glob("point*.npz"):
        stale.unlink()
    replay(bundle_dir, data_dir, capture=capture_dir)
    return check(candidate_capture.read(capture_dir))
