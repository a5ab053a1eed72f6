"""Evaluate on the held-out window, against baselines, with the spread over users.

Protocol (also written into every report, so anyone can recompute the numbers):
- Rank "as of" split_ts: vectors fitted on events before it, counters, memberships and
  author standing as of it (training/state.py), freshness measured at it.
- Catalogue: the non-deleted posts created before the end of the data (and, on
  feed-like data, no older than the index window at split_ts); every method ranks this
  same catalogue, minus what the user may not or need not see (private posts of groups
  they are not in, posts they engaged with positively before split_ts).
- Targets: the posts a user engaged with positively (like, comment, share, save, or any
  positive weight) in [split_ts, end), in the catalogue, not engaged before split_ts.
- Users: those with at least one target and some engagement before split_ts (cold
  users have no vector for any method), at most max_users, drawn with `seed`.
- recall@K = hits in the top K / number of targets; NDCG@K with binary relevance and
  the ideal DCG of min(K, targets) hits; coverage@K = distinct posts in all users' top K
  / catalogue size; diversity@10 = distinct communities in a user's top 10 / its length.
- Spread: 95% bootstrap intervals (resampling users, `bootstrap` draws, `seed`) of each
  mean, and of the paired per-user difference of the gate metric between the pipeline
  and each baseline: a difference whose interval excludes 0 is not noise.
- Ties are broken by the lower post row. Scores are float32.
Methods: random (numpy default_rng(seed), one uniform [256 users x catalogue] draw per
chunk of users in ascending order); most_popular (summed positive weight before
split_ts); plain_als (implicit ALS fitted directly on the user x post matrix of summed
positive training weights, implicit's default alpha 1, the pipeline's factors,
iterations, regularization and seed); als_stage (the pipeline's embeddings alone:
user . post vector from the bundle); pipeline (the service's retrieval: the top 500 of
the catalogue by user . post vector plus the 50 newest catalogue posts of each community
the user belongs to as of split_ts, then core.scoring.feature_matrix and the
bundle's scorer; no diversity re-rank).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from core.scoring import LinearScorer
from training.als import fit_als
from training.features import CandidateSource, Model, features, seen_matrix, top_k
from training.params import AlsParams, EvalParams
from training.schema import Dataset
from training.split import TimeSplit
from training.state import WorldState

GATE_METRIC = "ndcg@10"
METHODS = ("random", "most_popular", "plain_als", "als_stage", "pipeline")


@dataclass
class EvalResult:
    users: np.ndarray  # int32 user rows evaluated
    rankings: np.ndarray  # int32 [methods, users, max(K)] post rows, -1 padded
    report: dict = field(default_factory=dict)


def catalogue_rows(ds: Dataset, now: int, until: int, window_days: float | None) -> np.ndarray:
    keep = ~ds.post_deleted & (ds.post_created_at < until)
    if window_days is not None:
        keep &= ds.post_created_at >= now - window_days * 86_400
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


def plain_als(ds: Dataset, train_mask: np.ndarray, als: AlsParams) -> tuple[np.ndarray, np.ndarray]:
    """implicit ALS on the user x post matrix of positive training engagement (counts), as a
    practitioner would fit it directly: raw summed weights, implicit's default alpha (1)."""
    pos = train_mask & (ds.event_weights() > 0)
    m = sp.csr_matrix(
        (ds.event_weights()[pos].astype(np.float32), (ds.e_user[pos], ds.e_post[pos])), shape=(ds.n_users, ds.n_posts)
    )
    m.sum_duplicates()
    return fit_als(m, replace(als, alpha=1.0))


def _rank_dense(source: CandidateSource, users: np.ndarray, score_fn, k: int, chunk: int = 256) -> np.ndarray:
    """Top k catalogue rows per user for a method that scores the whole catalogue."""
    out = np.full((len(users), k), -1, np.int32)
    for lo in range(0, len(users), chunk):
        batch = users[lo : lo + chunk]
        scores = score_fn(batch).astype(np.float32)
        source.hide(scores, batch)
        top = top_k(scores, k)
        valid = np.isfinite(np.take_along_axis(scores, top, axis=1))
        out[lo : lo + chunk, : top.shape[1]] = np.where(valid, source.catalogue[top], -1)
    return out


def rank_pipeline(
    ds: Dataset,
    state: WorldState,
    model: Model,
    scorer: LinearScorer,
    source: CandidateSource,
    users: np.ndarray,
    k: int,
    now: int,
) -> np.ndarray:
    out = np.full((len(users), k), -1, np.int32)
    cands = source.for_users(users)
    sizes = np.array([len(c) for c in cands])
    if sizes.sum() == 0:
        return out
    flat_users = np.repeat(users, sizes)
    flat_posts = np.concatenate(cands)
    scores = scorer.score(features(ds, state, model, flat_users, flat_posts, now))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for i in range(len(users)):
        s, p = scores[starts[i] : starts[i + 1]], flat_posts[starts[i] : starts[i + 1]]
        order = np.lexsort((p, -s))[:k]  # ties broken by row: deterministic
        out[i, : len(order)] = p[order]
    return out


def per_user_metrics(
    rankings: np.ndarray, targets: sp.csr_matrix, users: np.ndarray, ds: Dataset, ks: tuple[int, ...]
) -> dict[str, np.ndarray]:
    T = targets[users]
    n_t = np.diff(T.indptr)
    hits = np.zeros(rankings.shape, bool)
    for i in range(len(users)):
        hits[i] = np.isin(rankings[i], T.indices[T.indptr[i] : T.indptr[i + 1]]) & (rankings[i] >= 0)
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


def bootstrap_ci(values: np.ndarray, draws: int, rng: np.random.Generator) -> tuple[float, float]:
    if len(values) == 0:
        return (0.0, 0.0)
    idx = rng.integers(0, len(values), (draws, len(values)))
    means = values[idx].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


@dataclass
class EvalSetup:
    """What is evaluated (the model, its scorer, the world as of the split) and on what."""

    ds: Dataset
    split: TimeSplit
    state: WorldState  # as of split.split_ts
    model: Model
    scorer: LinearScorer
    window_days: float | None  # the index window (None: catalogue-like, every post)


def evaluate(
    setup: EvalSetup, params: EvalParams, als: AlsParams, notes: list[str] | None = None, progress: bool = False
) -> EvalResult:
    """Rank the held-out window with every method; `als` is what plain ALS is fitted with."""
    ds, state, model, scorer, window_days = setup.ds, setup.state, setup.model, setup.scorer, setup.window_days
    split_ts, end_ts, train_mask, test_mask = (
        setup.split.split_ts,
        setup.split.end_ts,
        setup.split.train,
        setup.split.test,
    )
    catalogue = catalogue_rows(ds, split_ts, end_ts, window_days)
    seen = seen_matrix(ds, train_mask)
    targets = target_matrix(ds, test_mask, seen, catalogue)
    all_test_pos = int((test_mask & (ds.event_weights() > 0)).sum())
    users = pick_users(targets, seen, params.max_users, params.seed)
    k = max(params.ks)
    source = CandidateSource(ds, state, model, catalogue, seen)
    rng = np.random.default_rng(params.seed)
    popularity = state.positives[catalogue]
    plain_u, plain_i = plain_als(ds, train_mask, als)
    scorers = {
        "random": lambda b: rng.random((len(b), len(catalogue))),
        "most_popular": lambda b: np.broadcast_to(popularity, (len(b), len(catalogue))).copy(),
        "plain_als": lambda b: plain_u[b] @ plain_i[catalogue].T,
        "als_stage": lambda b: model.user_factors[b] @ model.post_vectors[catalogue].T,
    }
    from tqdm import tqdm

    rankings = np.full((len(METHODS), len(users), k), -1, np.int32)
    for m, name in enumerate(tqdm(METHODS, desc="evaluate", unit="method", disable=not progress)):
        if name == "pipeline":
            rankings[m] = rank_pipeline(ds, state, model, scorer, source, users, k, split_ts)
        else:
            rankings[m] = _rank_dense(source, users, scorers[name], k)
    report = summarise(ds, rankings, targets, users, catalogue, params)
    report["protocol"] = {
        "split_ts": int(split_ts),
        "end_ts": int(end_ts),
        "ks": list(params.ks),
        "seed": params.seed,
        "bootstrap": params.bootstrap,
        "max_users": params.max_users,
        "users": int(len(users)),
        "catalogue_posts": int(len(catalogue)),
        "index_window_days": window_days,
        "targets": int(targets[users].nnz),
        "test_positive_events": all_test_pos,
        "users_with_targets": int((np.diff(targets.indptr) > 0).sum()),
        "plain_als": {k: v for k, v in asdict(als).items() if k != "alpha"},
        "gate_metric": GATE_METRIC,
        "text": __doc__.split("recompute the numbers):", 1)[1].strip(),
    }
    report["notes"] = list(notes or [])
    return EvalResult(users, rankings, report)


def summarise(
    ds: Dataset,
    rankings: np.ndarray,
    targets: sp.csr_matrix,
    users: np.ndarray,
    catalogue: np.ndarray,
    params: EvalParams,
) -> dict:
    rng = np.random.default_rng(params.seed + 1)
    methods, per_user = {}, {}
    for m, name in enumerate(METHODS):
        pu = per_user_metrics(rankings[m], targets, users, ds, params.ks)
        per_user[name] = pu
        row = {}
        for metric, values in pu.items():
            lo, hi = bootstrap_ci(values, params.bootstrap, rng)
            row[metric] = {"mean": float(values.mean()) if len(values) else 0.0, "ci95": [lo, hi]}
        for kk in params.ks:
            r = rankings[m][:, :kk]
            row[f"coverage@{kk}"] = {"mean": len(np.unique(r[r >= 0])) / max(len(catalogue), 1)}
        methods[name] = row
    gate = per_user["pipeline"][GATE_METRIC]
    versus = {}
    for name in METHODS[:-1]:
        diff = gate - per_user[name][GATE_METRIC]
        lo, hi = bootstrap_ci(diff, params.bootstrap, rng)
        versus[name] = {
            "difference": float(diff.mean()) if len(diff) else 0.0,
            "ci95": [lo, hi],
            "beyond_noise": bool(lo > 0),
        }
    return {
        "methods": methods,
        "pipeline_vs": {GATE_METRIC: versus},
        "gate": {"metric": GATE_METRIC, "value": methods["pipeline"][GATE_METRIC]["mean"]},
    }


def markdown(report: dict, title: str) -> str:
    """The report as Markdown: headline table, pipeline-vs-baselines, protocol, notes."""
    proto = report["protocol"]
    metrics = [f"{m}@{k}" for m in ("recall", "ndcg") for k in proto["ks"]]
    lines = [
        f"# Evaluation report: {title}",
        "",
        f"{proto['users']} users, {proto['targets']} held-out positives over a catalogue of "
        f"{proto['catalogue_posts']} posts; window [{proto['split_ts']}, {proto['end_ts']}). "
        "Each cell: mean [95% bootstrap interval over users].",
        "",
        "| method | " + " | ".join(metrics) + " | coverage@10 | diversity@10 |",
        "|---|" + "---|" * (len(metrics) + 2),
    ]
    for name, row in report["methods"].items():
        cells = [f"{row[m]['mean']:.4f} [{row[m]['ci95'][0]:.4f}, {row[m]['ci95'][1]:.4f}]" for m in metrics]
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {row['coverage@10']['mean']:.3f} | {row['diversity@10']['mean']:.3f} |"
        )
    gate = report["gate"]["metric"]
    lines += [
        "",
        f"## Pipeline vs baselines on {gate} (paired over the same users)",
        "",
        "| baseline | pipeline minus baseline | 95% interval | beyond noise |",
        "|---|---|---|---|",
    ]
    for name, v in report["pipeline_vs"][gate].items():
        lines.append(
            f"| {name} | {v['difference']:+.4f} | [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] | "
            f"{'yes' if v['beyond_noise'] else 'no'} |"
        )
    extra = report.get("training", {})
    if extra:
        lines += ["", "## Training", ""] + [f"- {k}: {v}" for k, v in extra.items()]
    if report.get("notes"):
        lines += ["", "## Notes on the data", ""] + [f"- {n}" for n in report["notes"]]
    lines += [
        "",
        "## Protocol",
        "",
        proto["text"],
        "",
        f"Parameters: split_ts={proto['split_ts']}, end_ts={proto['end_ts']}, K={proto['ks']}, "
        f"seed={proto['seed']}, bootstrap={proto['bootstrap']}, max_users={proto['max_users']}, "
        f"index_window_days={proto['index_window_days']}, plain_als={proto['plain_als']}. "
        "The evaluated users and every method's top-K are saved in the bundle "
        "(eval_users.npy, eval_rankings.npy, methods in the order of report.json 'methods').",
        "",
    ]
    return "\n".join(lines)
