"""The publish gate compares like with like: the serving model is re-ranked on the
candidate's data, split point, users and window before the two are compared.

Two saved reports from different data windows are not comparable (a busier week scores
higher for every model). So the serving bundle's model (its vectors, its scorer, its
hotness half-life) is carried into the candidate's world by id: users, communities and
posts it knows keep their vectors; posts it never saw start from their community's (and
author's) vector, as the service would place them; users it never saw have no vector.
It then ranks the candidate's evaluated users at the candidate's gate points (the first
split point, and the next ones while fewer than --eval-users user-requests are judged:
evaluate.gate_point_count) with the candidate's retrieval, and both models are judged on
the candidate's longest window after each, paired per user-request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import contract
from core.bundle import Bundle, load_bundle
from training.evaluate import (
    DAY,
    GATE_METRIC,
    SplitPoint,
    bootstrap_ci,
    catalogue_rows,
    gate_point_count,
    per_user_metrics,
    rank_pipeline,
    saved_method,
    target_matrix,
    verdict,
)
from training.features import CandidateSource, Model, seen_matrix
from training.load import load_dataset
from training.schema import Dataset
from training.state import state_as_of


@dataclass
class GateComparison:
    candidate: float  # mean gate metric of the candidate, on its own users and window
    serving: float  # the serving model's, on the same users and window
    ci95: tuple[float, float]  # of the paired difference candidate - serving
    users: int  # user-requests judged, over the gate's split points
    points: int = 1  # split points pooled

    @property
    def verdict(self) -> str:
        return verdict(*self.ci95)


def _rows(row_from, ids: list[str]) -> np.ndarray:
    """Rows of ids in the serving bundle, -1 where unknown (a bundle's post and user
    lookups answer a whole list in one call; communities are a plain dict)."""
    if hasattr(row_from, "rows"):
        return row_from.rows(ids)
    return np.array([row_from.get(i, -1) for i in ids], dtype=np.int64)


def _by_id(ids_to: list[str], row_from, values: np.ndarray) -> np.ndarray:
    """values (rows of the serving bundle) re-indexed to ids_to; zeros where unknown."""
    out = np.zeros((len(ids_to), values.shape[1]), dtype=np.float32)
    rows = _rows(row_from, ids_to)
    known = rows >= 0
    out[known] = np.asarray(values)[rows[known]]
    return out


def carried_model(serving: Bundle, ds: Dataset) -> Model:
    """The serving model in the candidate data's index space (see the module docstring)."""
    user_ids, comm_ids, post_ids = ds.user_ids.tolist(), ds.community_ids.tolist(), ds.post_ids.tolist()
    ds_row = {p: i for i, p in enumerate(post_ids)}
    users = _by_id(user_ids, serving.user_row, serving[contract.USER_FACTORS_FILE])
    communities = _by_id(comm_ids, serving.community_row, serving[contract.COMMUNITY_FACTORS_FILE])
    posts = _by_id(post_ids, serving.post_row, serving[contract.POST_VECTORS_FILE])
    served = _rows(serving.post_row, post_ids)
    unknown = served < 0
    if unknown.any():
        comm = np.array([serving.community_row.get(c, -1) for c in comm_ids], dtype=np.int64)[
            ds.post_community[unknown]
        ]
        author_ids = ds.user_ids[np.maximum(ds.post_author[unknown], 0)].tolist()
        author = np.where(ds.post_author[unknown] >= 0, _rows(serving.user_row, author_ids), -1)
        placed = serving.new_post_vectors(np.maximum(comm, 0), author)
        placed[comm < 0] = 0.0  # a community the serving model never knew: no place for it
        posts[unknown] = placed
    # Neighbour lists by id: the serving model's rows become the candidate data's rows.
    to_candidate = np.array([ds_row.get(p, -1) for p in serving.post_ids], dtype=np.int32)
    known = served >= 0
    nb = np.asarray(serving[contract.POST_NEIGHBOURS_FILE])
    neighbours = np.full((len(post_ids), nb.shape[1]), -1, dtype=np.int32)
    sims = np.zeros((len(post_ids), nb.shape[1]), dtype=np.float32)
    rows = nb[served[known]]
    neighbours[known] = np.where(rows >= 0, to_candidate[np.maximum(rows, 0)], -1)
    sims[known] = np.where(
        neighbours[known] >= 0, np.asarray(serving[contract.POST_NEIGHBOUR_SIMS_FILE])[served[known]], 0
    )
    return Model(users, communities, posts, neighbours=neighbours, neighbour_sims=sims)


class Shipped:
    """A bundle's model carried into the data (carried_model, once), ranking at a split
    point with the world as of it under the bundle's own hot half-life, through the
    candidate's retrieval: what that bundle would serve there."""

    def __init__(self, bundle: Bundle, ds: Dataset):
        self.ds, self.scorer = ds, bundle.scorer
        self.half_life_h = float(bundle.manifest.params.get("hot_half_life_h", 24.0))
        self.model = carried_model(bundle, ds)

    def rank(self, split_ts: int, catalogue: np.ndarray, seen, users: np.ndarray, k: int) -> np.ndarray:
        state = state_as_of(self.ds, split_ts, self.ds.memberships_derived, self.half_life_h)
        source = CandidateSource(self.ds, state, self.model, catalogue, seen)
        return rank_pipeline(self.ds, SplitPoint(split_ts, state, self.model, self.scorer), source, users, k)


def compare_on_candidate(candidate_dir: Path, serving_dir: Path, data_dir: Path | None = None) -> GateComparison:
    """Re-rank the candidate's gate points and windows with the serving model and compare, paired."""
    candidate = load_bundle(candidate_dir, verify=False)
    serving = load_bundle(serving_dir, verify=False)
    p = candidate.manifest.params
    ds = load_dataset(Path(data_dir or p["data_dir"]))
    end_ts = int(p["data_end_ts"])
    longest = max(p["eval"]["windows_days"])
    all_users = np.load(candidate_dir / contract.EVAL_USERS_FILE)
    rankings = np.load(candidate_dir / contract.EVAL_RANKINGS_FILE, mmap_mode="r")
    pipeline = saved_method(candidate_dir, "pipeline")
    points = [int(ts) for ts in p.get("split_points") or [p["split_ts"]]]
    gate_points = gate_point_count([(u >= 0).sum() for u in all_users[: len(points)]], int(p["eval"]["max_users"]))
    k = rankings.shape[-1]
    theirs_at = Shipped(serving, ds).rank
    own_at = Shipped(candidate, ds).rank if gate_points > 1 else None
    mine, old = [], []
    for j, split_ts in enumerate(points[:gate_points]):
        users = all_users[j][all_users[j] >= 0]
        if len(users) == 0:
            continue
        before = ds.e_ts < split_ts
        catalogue = catalogue_rows(ds, split_ts, p["index_window_applied_days"])
        seen = seen_matrix(ds, before)
        window = ~before & (ds.e_ts < min(end_ts, split_ts + int(longest * DAY)))
        targets = target_matrix(ds, window, seen, catalogue)
        # The first point's ranking is the candidate's saved one; at a later point the
        # report's was refitted, so the candidate ranks there as shipped, like the serving one.
        own = np.asarray(rankings[j, pipeline, : len(users)]) if j == 0 else own_at(split_ts, catalogue, seen, users, k)
        theirs = theirs_at(split_ts, catalogue, seen, users, k)
        mine.append(per_user_metrics(own, targets, users, ds, (10,))[GATE_METRIC])
        old.append(per_user_metrics(theirs, targets, users, ds, (10,))[GATE_METRIC])
    a = np.concatenate(mine) if mine else np.zeros(0)
    b = np.concatenate(old) if old else np.zeros(0)
    lo, hi = bootstrap_ci(a - b, int(p["eval"]["bootstrap"]), np.random.default_rng(int(p["eval"]["seed"])))
    return GateComparison(_mean(a), _mean(b), (lo, hi), int(len(a)), gate_points)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else 0.0
