"""Evaluate by replay: at each split point, rank as the service would have, and judge the
ranking on the engagement of the next day and the next week, against tuned baselines.

Protocol (also written into every report, so anyone can recompute the numbers):
- Split points: the first is where the held-out share of events begins (an event-count
  quantile, or --split-at); further points follow one longest-window apart while data
  remains (--split-points; the automatic count passes over a point with nobody to
  judge). Everything is "as of" its split point: counters, hotness, memberships, author
  standing, each user's history and community weights as of it.
  Every method that fits something is refitted on all data before each point, as a
  weekly retrain would: the pipeline's vectors and co-engagement neighbours, and the
  ALS, EASE and item-kNN baselines, and the pipeline's scorer (at the first point the
  shipped one; at each later one fitted the same way on the 7-day windows before it).
- Catalogue: what the service would serve at that moment: the non-deleted posts created
  before the split point (and, on feed-like data, no older than the index window). Every
  method ranks this same catalogue, minus what the user may not or need not see (private
  posts of groups they are not in, posts they engaged with positively before the split).
- Windows: [split, split + 1 day) and [split, split + 7 days) by default (cut at the end
  of the data). Targets: the catalogue posts a user engaged with positively in the window,
  not engaged before the split. Users: at most max_users drawn (with `seed`) from those
  with a target in the longest window and some engagement before the split; a shorter
  window evaluates those of them with a target in it.
- recall@K = hits in the top K / targets; NDCG@K with binary relevance and the ideal DCG
  of min(K, targets) hits; coverage@K = distinct posts in all users' top K / catalogue;
  diversity@10 = distinct communities in a user's top 10 / its length.
- Spread: 95% bootstrap intervals (resampling users, `bootstrap` draws) of each mean,
  and of the paired per-user difference of NDCG@10 between the pipeline and each
  baseline: an interval above 0 is "better, beyond noise", below 0 "worse, beyond noise",
  otherwise "within noise".
- Baselines are tuned on the inner split (the same protocol one longest-window before the
  first split point, inside the training data, widened on a sparse log until enough users
  engage in it); the hot feeds on windows of the longest window's length before the first
  split point instead, pooled until enough users are judged (hot_windows in the
  baselines' settings), as they are judged on such windows. The pipeline's scorer is
  fitted on such windows too.
- Gate: the pipeline's NDCG@10 over the longest window of the split points from the
  first, pooled until max_users user-requests are judged (one full point of a busy log;
  every point of a log too sparse to reach it). `make publish` re-ranks the serving model
  on those same points, users and windows.
- Ties are broken by the lower post row. Scores are float32.
Methods: random, most_popular, hot_global, hot_in_communities, newest_in_communities,
active_in_communities, newest_from_followed, item_knn, ease, plain_als (training/baselines.py); als_stage (the pipeline's embeddings
alone: user . post vector); pipeline (the service's retrieval, core/retrieval.py, then
core.scoring.feature_matrix and the bundle's scorer; no diversity re-rank).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from core import contract
from core.scoring import Scorer
from training import candidate_capture, provenance
from training.baselines import BaselineParams, RankingWorld, build
from training.csvio import DataError
from training.features import CandidateSource, Model, features, seen_matrix, top_k
from training.params import AlsParams, EvalParams
from training.schema import Dataset
from training.state import WorldState

GATE_METRIC = "ndcg@10"


def gate_point_count(users_per_point, min_requests: int) -> int:
    """How many split points, from the first, the gate pools: until min_requests
    user-requests are judged, else all of them. A busy log's first point judges
    --eval-users users and is its gate alone, as before; a forum's first week may judge
    two users, and a gate on two users passes or refuses a model by chance."""
    judged = 0
    for count, users in enumerate(users_per_point, 1):
        judged += int(users)
        if judged >= min_requests:
            return count
    return max(1, len(users_per_point))


BASELINES = (
    "random",
    "most_popular",
    "hot_global",
    "hot_in_communities",
    "newest_in_communities",
    "active_in_communities",
    "newest_from_followed",
    "item_knn",
    "ease",
    "plain_als",
)
METHODS = (*BASELINES, "als_stage", "pipeline")
DAY = 86_400


def saved_method(bundle_dir: Path, name: str) -> int:
    """Where method `name` sits in a bundle's eval_rankings.npy. From its report, not from
    METHODS: a bundle trained before a baseline was added orders its methods as that
    release did (its report's "methods", written in that order, when it has no
    "ranking_methods")."""
    report = json.loads((Path(bundle_dir) / contract.REPORT_JSON_FILE).read_text())
    order = report.get("ranking_methods") or list(report["methods"])
    if name not in order:
        raise DataError(f"{bundle_dir}: its report has no method {name!r} (it has {', '.join(order)})")
    return order.index(name)


@dataclass
class SplitPoint:
    """What ranks at one split point: the world as of it and the model fitted before it."""

    split_ts: int
    state: WorldState
    model: Model
    scorer: Scorer


@dataclass
class EvalResult:
    users: np.ndarray  # int32 [points, max_users] user rows evaluated, -1 padded
    rankings: np.ndarray  # int32 [points, methods, max_users, max(K)] post rows, -1 padded
    report: dict = field(default_factory=dict)


def catalogue_rows(ds: Dataset, now: int, window_days: float | None) -> np.ndarray:
    """What the service would serve at `now`: non-deleted posts created before it (no
    older than the index window when one applies)."""
    keep = ~ds.post_deleted & (ds.post_created_at < now)
    if window_days is not None:
        keep &= ds.post_created_at >= now - window_days * DAY
    return np.flatnonzero(keep).astype(np.int64)


def target_matrix(ds: Dataset, mask: np.ndarray, seen: sp.csr_matrix, catalogue: np.ndarray) -> sp.csr_matrix:
    pos = mask & (ds.event_weights() > 0)
    in_cat = np.zeros(ds.n_posts, bool)
    in_cat[catalogue] = True
    pos &= in_cat[ds.e_post]
    t = sp.csr_matrix((np.ones(int(pos.sum()), np.float32), (ds.e_user[pos], ds.e_post[pos])), shape=seen.shape)
    t.sum_duplicates()
    t.data[:] = 1
    t = t - t.multiply(seen > 0)
    t.eliminate_zeros()
    return t.tocsr()


def pick_users(targets: sp.csr_matrix, seen: sp.csr_matrix, max_users: int, seed: int) -> np.ndarray:
    has_target = np.diff(targets.indptr) > 0
    has_history = np.diff(seen.indptr) > 0
    users = np.flatnonzero(has_target & has_history)
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    return users.astype(np.int32)


# Batches ranked side by side when two batches' working arrays fit in this many bytes
# (counted as 8 bytes a score: the float32 scores and top_k's negated copy): the score
# functions, the hiding and the top k's sort are numpy work on one core each, and every
# batch is ranked alone (the same answer in any order).
PARALLEL_BATCH_BYTES = 512 << 20


@functools.cache
def _batch_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="rank-batch")


def rank_dense(source: CandidateSource, users: np.ndarray, score_fn, k: int, chunk: int = 256) -> np.ndarray:
    """Top k catalogue rows per user for a method that scores the whole catalogue. A score
    function that draws random numbers in call order says so (draws_in_order) and gets its
    batches one after another, in order."""
    out = np.full((len(users), k), -1, np.int32)

    def rank(lo: int) -> None:
        batch = users[lo : lo + chunk]
        # C order: top_k and hide pass along each row (a transposed array is 10x slower)
        scores = np.ascontiguousarray(score_fn(batch), dtype=np.float32)
        source.hide(scores, batch)
        top = top_k(scores, k)
        valid = np.isfinite(np.take_along_axis(scores, top, axis=1))
        out[lo : lo + chunk, : top.shape[1]] = np.where(valid, source.catalogue[top], -1)

    starts = range(0, len(users), chunk)
    in_order = getattr(score_fn, "draws_in_order", False)
    if in_order or len(starts) < 2 or 2 * chunk * len(source.catalogue) * 8 > PARALLEL_BATCH_BYTES:
        for lo in starts:
            rank(lo)
    else:
        list(_batch_pool().map(rank, starts))  # list(): a batch's exception is raised here
    return out


def rank_pipeline(ds: Dataset, point: SplitPoint, source: CandidateSource, users: np.ndarray, k: int) -> np.ndarray:
    out = np.full((len(users), k), -1, np.int32)
    cands = source.for_users(users)
    sizes = np.array([len(c) for c in cands])
    if sizes.sum() == 0:
        return out
    flat_users = np.repeat(users, sizes)
    flat_posts = np.concatenate(cands)
    scores = point.scorer.score(features(ds, point.state, point.model, flat_users, flat_posts, point.split_ts))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for i in range(len(users)):
        s, p = scores[starts[i] : starts[i + 1]], flat_posts[starts[i] : starts[i + 1]]
        order = np.lexsort((p, -s))[:k]  # ties broken by row: deterministic
        out[i, : len(order)] = p[order]
    return out


def per_user_metrics(rankings: np.ndarray, targets: sp.csr_matrix, users: np.ndarray, ds, ks) -> dict:
    T = targets[users]
    n_t = np.diff(T.indptr)
    # (request, post) pairs as one int64 key each: one membership test for every request
    # instead of one per request.
    n_posts = np.int64(max(T.shape[1], 1))
    ranked_keys = np.arange(len(users), dtype=np.int64)[:, None] * n_posts + rankings
    target_keys = np.repeat(np.arange(len(users), dtype=np.int64), n_t) * n_posts + T.indices
    hits = np.isin(ranked_keys, target_keys) & (rankings >= 0)
    discount = 1.0 / np.log2(np.arange(rankings.shape[1]) + 2.0)
    out = {}
    for k in ks:
        h = hits[:, :k]
        out[f"recall@{k}"] = h.sum(axis=1) / n_t
        ideal = np.array([discount[: min(k, n)].sum() for n in n_t])
        out[f"ndcg@{k}"] = (h * discount[:k]).sum(axis=1) / ideal
    top10 = rankings[:, :10]
    div = np.zeros(len(users))
    for i in range(len(users)):
        r = top10[i][top10[i] >= 0]
        div[i] = len(np.unique(ds.post_community[r])) / len(r) if len(r) else 0.0
    out["diversity@10"] = div
    return out


# DCG@10's ideal for n relevant items (n = 0 .. 10): NDCG's denominator.
IDEAL_DCG10 = np.array([(1.0 / np.log2(np.arange(n) + 2.0)).sum() for n in range(11)])


def dcg10_of_rows(
    groups: np.ndarray, relevant: np.ndarray, scores: np.ndarray, posts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat candidate rows ranked within each group (a request) by score, ties by post row
    as the pipeline breaks them: (the groups in ascending order, each one's DCG@10, its
    number of relevant rows)."""
    order = np.lexsort((posts, -scores, groups))
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(g) else np.empty(0, np.int64)
    sizes = np.diff(np.r_[starts, len(g)])
    position = np.arange(len(g)) - np.repeat(starts, sizes)
    discount = np.where(position < 10, 1.0 / np.log2(np.minimum(position, 10) + 2.0), 0.0)
    group = np.repeat(np.arange(len(starts)), sizes)
    rel = relevant[order].astype(np.float64)
    dcg = np.bincount(group, weights=rel * discount, minlength=len(starts))
    count = np.bincount(group, weights=rel, minlength=len(starts)).astype(np.int64)
    return g[starts], dcg, count


def bootstrap_ci(values: np.ndarray, draws: int, rng: np.random.Generator) -> tuple[float, float]:
    if len(values) == 0:
        return (0.0, 0.0)
    return _percentile_interval(values, _resamples(values, draws, rng))


def bootstrap_cis(samples: list[np.ndarray], draws: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """bootstrap_ci of each sample in turn from one generator: the same draws in the same
    order, so the same intervals. Each sample's means are taken on a second thread while
    the next sample's indices are drawn (numpy does both without the GIL): a report's
    60-odd intervals take about 35% less time."""
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(samples)
    with ThreadPoolExecutor(1, thread_name_prefix="bootstrap") as pool:
        pending = None  # (position, future): at most one, so at most two draws are held
        for i, values in enumerate(samples):
            if len(values) == 0:
                continue
            idx = _resamples(values, draws, rng)
            if pending is not None:
                out[pending[0]] = pending[1].result()
            pending = (i, pool.submit(_percentile_interval, values, idx))
        if pending is not None:
            out[pending[0]] = pending[1].result()
    return out


def _resamples(values: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    # int32 draws are the very numbers int64 ones are (numpy draws a range under 2^32
    # from 32-bit words either way), and gathering with them is about 4x faster.
    return rng.integers(0, len(values), (draws, len(values)), dtype=np.int32)


def _percentile_interval(values: np.ndarray, idx: np.ndarray) -> tuple[float, float]:
    means = values[idx].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


def rank_shipped(
    ds: Dataset, shipped: SplitPoint, point: SplitPoint, source: CandidateSource, users: np.ndarray, k: int
) -> np.ndarray:
    """The shipped model (the first point's vectors and scorer) ranking at a later point,
    with the world as of it: what publishing it would serve there. The report's pipeline
    is refitted at a later point, as a weekly retrain would be, but the gate compares two
    bundles as they are: `make publish` re-ranks the serving bundle at the same points,
    the same way (training/gate.py)."""
    frozen = CandidateSource(ds, point.state, shipped.model, source.catalogue, source.seen, source.params)
    return rank_pipeline(ds, SplitPoint(point.split_ts, point.state, shipped.model, shipped.scorer), frozen, users, k)


def verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return "better, beyond noise"
    if hi < 0:
        return "worse, beyond noise"
    return "within noise"


def measure_ndcg(
    ds: Dataset, world: RankingWorld, seen: sp.csr_matrix, until: int, users_max: int, seed: int
) -> Callable:
    """For tuning: a function (score function) -> mean NDCG@10 on [as_of, until)."""
    mask = (ds.e_ts >= world.as_of) & (ds.e_ts < until)
    targets = target_matrix(ds, mask, seen, world.catalogue)
    users = pick_users(targets, seen, users_max, seed)
    source = CandidateSource(ds, world.state, None, world.catalogue, seen)

    def measure(fn) -> float:
        if len(users) == 0:
            return 0.0
        ranked = rank_dense(source, users, fn, 10)
        return float(per_user_metrics(ranked, targets, users, ds, (10,))["ndcg@10"].mean())

    measure.users = users  # what the tuning was measured on (for the report)
    return measure


def evaluate(
    ds: Dataset,
    points: list[SplitPoint],
    end_ts: int,
    index_window_days: float | None,
    baselines: BaselineParams,
    als: AlsParams,
    params: EvalParams,
    notes: list[str] | None = None,
    progress: bool = False,
    capture: Path | None = None,
) -> EvalResult:
    """Rank at every split point with every method and judge each window; with `capture`,
    also write the pipeline's candidates of each point there (training/candidate_capture.py)."""
    k = max(params.ks)
    longest = max(params.windows_days)
    n_points = len(points)
    all_users = np.full((n_points, params.max_users), -1, np.int32)
    all_rankings = np.full((n_points, len(METHODS), params.max_users, k), -1, np.int32)
    windows, skipped = [], set()
    per_window: list[list[dict]] = [[] for _ in params.windows_days]  # per window length, per split point
    from tqdm import tqdm

    bar = tqdm(total=n_points * len(METHODS), desc="evaluate", unit="method", disable=not progress)
    gate_parts, gate_points, gate_judged = [], 1, 0  # the gate's per-user values, its points, requests so far
    for j, point in enumerate(points):
        split_ts = point.split_ts
        before = ds.e_ts < split_ts
        catalogue = catalogue_rows(ds, split_ts, index_window_days)
        seen = seen_matrix(ds, before)
        long_mask = ~before & (ds.e_ts < min(end_ts, split_ts + int(longest * DAY)))
        long_targets = target_matrix(ds, long_mask, seen, catalogue)
        users = pick_users(long_targets, seen, params.max_users, params.seed + j)
        all_users[j, : len(users)] = users
        world = RankingWorld(ds, point.state, before, catalogue, als.engine)
        source = CandidateSource(ds, point.state, point.model, catalogue, seen)
        scorers = build(world, baselines, als)
        scorers["als_stage"] = lambda b, m=point.model, c=catalogue: m.user_factors[b] @ m.post_vectors[c].T
        for m, name in enumerate(METHODS):
            if name == "pipeline":
                all_rankings[j, m, : len(users)] = rank_pipeline(ds, point, source, users, k)
                if j == 0 or gate_judged < params.max_users:  # a gate point (gate_point_count)
                    shipped = (
                        all_rankings[j, m, : len(users)]
                        if j == 0
                        else rank_shipped(ds, points[0], point, source, users, k)
                    )
                    gate_parts.append(per_user_metrics(shipped, long_targets, users, ds, (10,))[GATE_METRIC])
                    gate_points = j + 1
                gate_judged += len(users)
                if capture is not None:
                    candidate_capture.write(
                        capture / f"point{j}.npz", ds, point, source, users, long_targets, scorers["ease"]
                    )
            elif scorers[name] is None:
                skipped.add(name)
            else:
                all_rankings[j, m, : len(users)] = rank_dense(source, users, scorers[name], k)
            bar.update()
        for i, days in enumerate(params.windows_days):
            until = min(end_ts, split_ts + int(days * DAY))
            mask = ~before & (ds.e_ts < until)
            targets = target_matrix(ds, mask, seen, catalogue)
            in_window = np.flatnonzero(np.diff(targets[users].indptr) > 0)
            values = method_metrics(
                ds, all_rankings[j][:, in_window], targets, users[in_window], catalogue, params, skipped
            )
            per_window[i].append(values)
            report = summarise(values, params, j)
            report["window"] = {
                "split_ts": int(split_ts),
                "until": int(until),
                "days": round((until - split_ts) / DAY, 2),
                "users": int(len(in_window)),
                "targets": int(targets[users[in_window]].nnz),
                "catalogue_posts": int(len(catalogue)),
            }
            windows.append(report)
    bar.close()
    pooled = []
    if n_points > 1:
        for i, days in enumerate(params.windows_days):
            values = pool(per_window[i])
            report = summarise(values, params, 100 + i)
            report["window"] = {
                "split_ts": "all",
                "days": days,
                "users": int(len(values["pipeline"][GATE_METRIC])),
                "split_points": n_points,
            }
            pooled.append(report)
    first = [w for w in windows if w["window"]["split_ts"] == points[0].split_ts][-1]  # the longest window
    # The headline (report.json's methods and pipeline_vs, the manifest's metrics): the
    # longest window over every split point, pooled, as the report's last table; a first
    # point alone judges 2 to 547 users on the real logs of docs/training.md.
    headline = next((w for w in pooled if w["window"]["days"] == longest), first)
    gate_values = np.concatenate(gate_parts)
    report = {
        "ranking_methods": list(METHODS),  # the order of eval_rankings.npy's method axis
        "headline": headline["window"],
        "methods": headline["methods"],
        "pipeline_vs": headline["pipeline_vs"],
        "gate": {
            "metric": GATE_METRIC,
            "value": float(gate_values.mean()) if len(gate_values) else 0.0,
            "split_points": [int(p.split_ts) for p in points[:gate_points]],
            "users": int(len(gate_values)),
        },
        "windows": windows,
        "pooled": pooled,
        "skipped": sorted(skipped),
        "baselines": {k_: v for k_, v in baselines.__dict__.items()},
        "protocol": {
            "split_points": [int(p.split_ts) for p in points],
            "split_ts": int(points[0].split_ts),
            "end_ts": int(end_ts),
            "windows_days": list(params.windows_days),
            "ks": list(params.ks),
            "seed": params.seed,
            "bootstrap": params.bootstrap,
            "max_users": params.max_users,
            "users": first["window"]["users"],
            "targets": first["window"]["targets"],
            "catalogue_posts": first["window"]["catalogue_posts"],
            "index_window_days": index_window_days,
            "gate_metric": GATE_METRIC,
            "gate_window": {
                "split_ts": int(points[0].split_ts),
                "split_points": gate_points,
                "days": first["window"]["days"],
            },
            "text": __doc__.split("recompute the numbers):", 1)[1].strip(),
        },
        "notes": list(notes or []),
    }
    return EvalResult(all_users, all_rankings, report)


def method_metrics(
    ds: Dataset,
    rankings: np.ndarray,
    targets: sp.csr_matrix,
    users: np.ndarray,
    catalogue: np.ndarray,
    params: EvalParams,
    skipped: set[str],
) -> dict[str, dict[str, np.ndarray]]:
    """Per method, per metric: one value per user (coverage@K: one value per split point)."""
    out = {}
    for m, name in enumerate(METHODS):
        if name in skipped:
            continue
        pu = per_user_metrics(rankings[m], targets, users, ds, params.ks)
        for kk in params.ks:
            r = rankings[m][:, :kk]
            pu[f"coverage@{kk}"] = np.array([len(np.unique(r[r >= 0])) / max(len(catalogue), 1)])
        out[name] = pu
    return out


def summarise(per_user: dict[str, dict[str, np.ndarray]], params: EvalParams, seed: int) -> dict:
    """Means with bootstrap intervals, and the pipeline's paired differences."""
    gate = per_user["pipeline"][GATE_METRIC]
    paired = [(n, gate - per_user[n][GATE_METRIC]) for n in per_user if n != "pipeline"]
    # Every interval, in the order the rows below take them (and their draws were taken).
    samples = [v for pu in per_user.values() for m, v in pu.items() if not m.startswith("coverage@")]
    rng = np.random.default_rng(params.seed + 1 + seed)
    intervals = iter(bootstrap_cis(samples + [d for _, d in paired], params.bootstrap, rng))
    methods = {}
    for name, pu in per_user.items():
        row = {}
        for metric, values in pu.items():
            if metric.startswith("coverage@"):
                row[metric] = {"mean": float(values.mean())}
                continue
            lo, hi = next(intervals)
            row[metric] = {"mean": float(values.mean()) if len(values) else 0.0, "ci95": [lo, hi]}
        methods[name] = row
    versus = {}
    for name, diff in paired:
        lo, hi = next(intervals)
        versus[name] = {
            "difference": float(diff.mean()) if len(diff) else 0.0,
            "ci95": [lo, hi],
            "beyond_noise": bool(lo > 0),
            "verdict": verdict(lo, hi),
        }
    return {"methods": methods, "pipeline_vs": {GATE_METRIC: versus}}


def pool(parts: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Every split point's per-user values of one window length together (a user
    evaluated at two points counts twice: two requests)."""
    return {
        name: {metric: np.concatenate([p[name][metric] for p in parts]) for metric in parts[0][name]}
        for name in parts[0]
    }


def _cell(c: dict) -> str:
    return f"{c['mean']:.4f} [{c['ci95'][0]:.4f}, {c['ci95'][1]:.4f}]"


def gate_phrase(report: dict) -> str:
    """What the gate value is: a report from before the gate pooled split points has one."""
    gate = report["gate"]
    points = len(gate.get("split_points", [0]))
    where = "the first split point's" if points == 1 else f"the first {points} split points' pooled"
    users = f", {gate['users']} user-requests" if "users" in gate else ""
    return f"the pipeline's {gate['metric']} over {where} longest window{users} = {gate['value']:.4f}"


def closest_baseline(report: dict) -> tuple[str, dict] | None:
    """The headline's baseline nearest the pipeline: the lowest lower end of the paired
    interval of the gate metric (als_stage is the pipeline's own part, not a baseline)."""
    vs = {name: v for name, v in report["pipeline_vs"][report["gate"]["metric"]].items() if name != "als_stage"}
    return min(vs.items(), key=lambda item: item[1]["ci95"][0]) if vs else None


def power_note(report: dict) -> str | None:
    """When the headline's nearest baseline is within noise: the smallest difference this
    replay could tell from noise, and how to judge more user-requests. On a small log
    "level" often means "too few requests": quantumcomputing's default replay (7 weekly
    points, 77 requests) read level with global hot; held out twice as long (14 points,
    161 requests) the pipeline was ahead of every baseline beyond noise (docs/training.md,
    "The Q&A logs over longer replays"). None when the verdict is beyond noise."""
    nearest = closest_baseline(report)
    info = report.get("headline")
    if nearest is None or info is None:
        return None
    lo, hi = nearest[1]["ci95"]
    if lo > 0 or hi < 0:
        return None
    proto = report["protocol"]
    days = max(proto["windows_days"])
    spans = len(range(int(proto["split_ts"]), int(proto["end_ts"]), int(days * DAY)))
    used = len(proto["split_points"])
    note = (
        f"Within noise: {info['users']} user-requests tell a difference from noise only beyond about "
        f"\u00b1{(hi - lo) / 2:.3f} (the interval's half-width). "
    )
    if used < spans:
        return note + (
            f"The hold-out spans {spans} windows of {days:g} days and this replay judged "
            f"{used}: --split-points {spans} replays them all; a larger --test-fraction holds out more."
        )
    return note + (
        f"This replay judged every {days:g}-day window of the hold-out ({used}): a larger "
        "--test-fraction holds out more of the log, and --split-points as many as its windows replays it all."
    )


def headline_phrase(report: dict) -> str:
    """Which window report.json's methods and pipeline_vs (and the manifest's metrics) are."""
    info = report.get("headline")
    if info is None:  # saved before the headline pooled the points
        return "Headline (report.json's methods and pipeline_vs): the first split point's longest window."
    where = (
        f"all {info['split_points']} split points pooled"
        if info["split_ts"] == "all"
        else f"the split at {info['split_ts']}"
    )
    return f"Headline (report.json's methods and pipeline_vs, the manifest's metrics): {where}, next {info['days']:g} days."


def markdown(report: dict, title: str, plot: str | None = None) -> str:
    """The report as Markdown: per window (every split point pooled first, then each split
    point), the methods and the pipeline's paired differences; then the tuned baselines,
    training, notes, protocol."""
    proto = report["protocol"]
    metrics = [f"{m}@{k}" for m in ("recall", "ndcg") for k in proto["ks"]]
    gate = report["gate"]["metric"]
    lines = [
        f"# Evaluation report: {title}",
        "",
        f"Replay at {len(proto['split_points'])} split point(s), windows of {proto['windows_days']} days. "
        f"Gate: {gate_phrase(report)}. {headline_phrase(report)} "
        "Each cell: mean [95% bootstrap interval over users].",
        "",
    ]
    note = power_note(report)
    if note:
        lines += [note, ""]
    if plot:
        lines += [f"![NDCG@10 and recall@50 per method and window]({plot})", ""]
    # The pooled windows first: the headline is there, and a reader stops at the answer.
    for w in report.get("pooled", []) + report["windows"]:
        info = w["window"]
        if info["split_ts"] == "all":
            head = f"## All {info['split_points']} split points pooled, next {info['days']:g} days"
            what = f"{info['users']} (user, split point) pairs."
        else:
            head = f"## Split at {info['split_ts']}, next {info['days']:g} days"
            what = f"{info['users']} users, {info['targets']} held-out positives, catalogue of {info['catalogue_posts']} posts."
        lines += [
            head,
            "",
            what,
            "",
            "| method | " + " | ".join(metrics) + " | coverage@10 | diversity@10 | pipeline minus method, NDCG@10 |",
            "|---|" + "---|" * (len(metrics) + 3),
        ]
        for name, row in w["methods"].items():
            v = w["pipeline_vs"][gate].get(name)
            diff = (
                f"{v['difference']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] {v['verdict']}" if v else "(this)"
            )
            lines.append(
                f"| {name} | "
                + " | ".join(_cell(row[m]) for m in metrics)
                + f" | {row['coverage@10']['mean']:.3f} | {row['diversity@10']['mean']:.3f} | {diff} |"
            )
        lines.append("")
    if report.get("skipped"):
        lines += [f"Not run on this data: {', '.join(report['skipped'])} (see notes).", ""]
    b = report.get("baselines", {})
    if b:
        lines += [
            "## Baselines as tuned",
            "",
            "On the inner split; the two hot feeds on the weeks in hot_windows ([start, users judged]).",
            "",
        ]
        lines += [f"- {k}: {v}" for k, v in b.items() if k != "tuning"]
        lines += [f"- grid {name}: {grid}" for name, grid in b.get("tuning", {}).items()]
        lines.append("")
    extra = report.get("training", {})
    if extra:
        lines += ["## Training", ""]
        lines += [f"- {k}: {provenance.describe(v) if k == 'environment' else v}" for k, v in extra.items()] + [""]
    if report.get("notes"):
        lines += ["## Notes on the data", ""] + [f"- {n}" for n in report["notes"]] + [""]
    lines += [
        "## Protocol",
        "",
        proto["text"],
        "",
        f"Parameters: split points={proto['split_points']}, end_ts={proto['end_ts']}, K={proto['ks']}, "
        f"seed={proto['seed']}, bootstrap={proto['bootstrap']}, max_users={proto['max_users']}, "
        f"index_window_days={proto['index_window_days']}. The evaluated users and every method's top-K per split "
        "point are saved in the bundle (eval_users.npy, eval_rankings.npy, methods in the order of "
        "training/evaluate.py METHODS).",
        "",
    ]
    return "\n".join(lines)
