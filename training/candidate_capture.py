"""The pipeline's candidates at each evaluation point, as a table for ranker studies.

Evaluation writes it when asked (training/reevaluate.py `replay(..., capture=DIR)`), and
training/ranker_check.py reads it to fit other rankers on the very candidates and
features the pipeline ranked. One file per split point, `point<j>.npz`:

  users, posts   int64 [n]: one row per (evaluated user, candidate), a user's rows together
  X              float32 [n, len(FEATURES)]: core.scoring's features, as rank_pipeline built them
  y              float32 [n]: 1 where the user engaged with the post in the longest window
  ease           float32 [n]: the EASE baseline's score of the pair (-1e9: outside its items;
                 0 everywhere when the point has no EASE model)
  req_users      int64 [m]: the evaluated users, as evaluation drew them
  n_targets      int64 [m]: each one's targets in the longest window (NDCG's ideal)
  split_ts       the point's split time
  scorer         the point's scorer JSON (core.scoring.load_scorer): the pipeline as evaluated
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from training.features import CandidateSource, features
from training.schema import Dataset

EASE_BATCH = 256  # users per call of EASE's score function (dense rows over the catalogue)


def write(
    path: Path, ds: Dataset, point, source: CandidateSource, users: np.ndarray, targets: sp.csr_matrix, ease_fn
) -> None:
    cands = source.for_users(users)
    sizes = np.array([len(c) for c in cands], dtype=np.int64)
    flat_users = np.repeat(users.astype(np.int64), sizes)
    flat_posts = np.concatenate(cands).astype(np.int64) if len(cands) else np.empty(0, np.int64)
    X = features(ds, point.state, point.model, flat_users, flat_posts, point.split_ts)
    # (user, post) as one int64 key each: one membership test for every pair.
    t_users = np.repeat(np.arange(targets.shape[0], dtype=np.int64), np.diff(targets.indptr))
    y = np.isin(flat_users * ds.n_posts + flat_posts, t_users * ds.n_posts + targets.indices).astype(np.float32)
    ease = np.zeros(len(flat_posts), np.float32)
    if ease_fn is not None:
        starts = np.concatenate([[0], np.cumsum(sizes)])
        for lo in range(0, len(users), EASE_BATCH):
            scores = np.asarray(ease_fn(users[lo : lo + EASE_BATCH]), dtype=np.float32)
            for i in range(len(scores)):
                a, b = starts[lo + i], starts[lo + i + 1]
                ease[a:b] = scores[i, source.col_of[flat_posts[a:b]]]
    np.savez(
        path,
        users=flat_users,
        posts=flat_posts,
        X=X,
        y=y,
        ease=ease,
        req_users=users.astype(np.int64),
        n_targets=np.diff(targets[users].indptr).astype(np.int64),
        split_ts=np.int64(point.split_ts),
        scorer=np.array(point.scorer.to_json()),
    )


def read(directory: Path) -> list[dict[str, np.ndarray]]:
    """Every point's table, in split-point order."""
    files = sorted(Path(directory).glob("point*.npz"), key=lambda f: int(f.stem.removeprefix("point")))
    out = []
    for f in files:
        with np.load(f) as z:
            out.append({k: z[k] for k in z.files})
    return out
