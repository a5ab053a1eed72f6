"""ALS: community-affinity embeddings with implicit ALS.

One factorisation places users, communities and posts in one space: the matrix is
users x [communities | posts].
- A post column holds the user's net engagement with that post (schema.KIND_WEIGHT:
  views count nothing, hides and reports subtract). A pair whose net is not positive is
  dropped rather than counted as a weak positive: a user who hid a post has said "not
  this", which is what ALS's "unobserved" already means; counting it would say "a bit".
- A community column holds the user's engagement summed over the group's posts plus a
  membership prior (more for trusted members and moderators): where a user stands across
  groups, in the spirit of SimClusters' InterestedIn.
Confidence grows with log(1 + net), so one heavy user or one play-count outlier cannot
dominate. Post columns make the user factors as sharp as a plain user x item ALS (on
catalogue-like logs the ALS stage must match it); community columns tie the groups into
the same space so a post nobody has touched yet is placed by its community (embeddings.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from core import contract
from training.params import AlsParams
from training.schema import Dataset
from training.state import WorldState

MEMBERSHIP_PRIOR = {contract.ROLE_MEMBER: 2.0, contract.ROLE_TRUSTED: 3.0, contract.ROLE_MODERATOR: 3.0}


@dataclass
class AlsModel:
    user_factors: np.ndarray  # float32 [n_users, d]
    community_factors: np.ndarray  # float32 [n_comm, d]
    post_factors: np.ndarray  # float32 [n_posts, d]; zeros for posts without engagement
    post_weight: np.ndarray  # float32 [n_posts]: summed confidence (c - 1) of each post's engagers


def confidence_matrix(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Sum weights per (row, col); keep positive nets; compress with log1p."""
    m = sp.coo_matrix((weights.astype(np.float64), (rows, cols)), shape=shape).tocsr()
    m.sum_duplicates()
    m.data[m.data < 0] = 0
    m.eliminate_zeros()
    m.data = np.log1p(m.data).astype(np.float32)
    return m.astype(np.float32)


def interaction_matrix(
    ds: Dataset, train_mask: np.ndarray, state: WorldState, community_share: float = 0.5
) -> sp.csr_matrix:
    """users x [communities | posts] confidence (before alpha), from events under train_mask."""
    ds.require_every_event("the ALS matrix (hides and reports lower a net)")
    w = ds.event_weights()[train_mask]
    users = ds.e_user[train_mask]
    posts = ds.e_post[train_mask]
    post_part = confidence_matrix(users, posts, w, (ds.n_users, ds.n_posts))
    prior_w = np.zeros(len(state.m_role), np.float32)
    for code, value in MEMBERSHIP_PRIOR.items():
        prior_w[state.m_role == code] = value
    comm_part = confidence_matrix(
        np.concatenate([users, state.m_user]),
        np.concatenate([ds.post_community[posts], state.m_community]),
        np.concatenate([w, prior_w]),
        (ds.n_users, ds.n_communities),
    )
    comm_part.data *= community_share
    return sp.hstack([comm_part, post_part], format="csr", dtype=np.float32)


def fit_als(matrix: sp.csr_matrix, params: AlsParams, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Factor a user x item confidence matrix; returns (user_factors, item_factors) float32."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    # implicit parallelises over users itself; a BLAS thread pool underneath oversubscribes
    # the cores (implicit warns and runs several times slower).
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            random_state=params.seed,
            calculate_training_loss=False,
        )
        model.fit(matrix, show_progress=progress)
    return np.ascontiguousarray(model.user_factors, dtype=np.float32), np.ascontiguousarray(
        model.item_factors, dtype=np.float32
    )


def fit_community_als(ds: Dataset, state: WorldState, params: AlsParams, progress: bool = False) -> AlsModel:
    """The ALS stage fitted on the events before state.as_of, with the engine params name."""
    if params.engine == "spark":
        from training.spark.als import fit_community_als_on_spark

        return fit_community_als_on_spark(ds, state, params)
    matrix = interaction_matrix(ds, ds.e_ts < state.as_of, state, params.community_share)
    user_f, item_f = fit_als(matrix, params, progress)
    n_c = ds.n_communities
    post_cols = matrix[:, n_c:].tocsc()
    # implicit's confidence is alpha * value; the item step weighs each engager by c - 1.
    weight = np.asarray((post_cols * params.alpha - post_cols.astype(bool)).sum(axis=0)).ravel()
    return AlsModel(
        user_f,
        np.ascontiguousarray(item_f[:n_c]),
        np.ascontiguousarray(item_f[n_c:]),
        np.maximum(weight, 0).astype(np.float32),
    )
