"""Stage 3: community-affinity embeddings with implicit ALS.

Users and communities are factorised from a confidence matrix: the summed weights of a
user's engagements with a community's posts (KIND_WEIGHT: views count nothing, hides and
reports subtract) plus a membership prior (members, more for trusted members and
moderators). A pair whose net signal is not positive is dropped rather than counted as
a weak positive: a user who keeps hiding a group's posts has told us "not this".
Confidence grows with log(1 + signal), so one heavy user cannot dominate a small group.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from service import contract
from training.schema import Dataset

MEMBERSHIP_PRIOR = {contract.ROLE_MEMBER: 2.0, contract.ROLE_TRUSTED: 3.0, contract.ROLE_MODERATOR: 3.0}


@dataclass
class AlsParams:
    factors: int = 32
    iterations: int = 15
    regularization: float = 0.05
    alpha: float = 10.0
    seed: int = 7


def confidence_matrix(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Sum weights per (row, col); keep positive nets; compress with log1p."""
    m = sp.coo_matrix((weights.astype(np.float64), (rows, cols)), shape=shape).tocsr()
    m.sum_duplicates()
    m.data[m.data < 0] = 0
    m.eliminate_zeros()
    m.data = np.log1p(m.data).astype(np.float32)
    return m.astype(np.float32)


def user_community_matrix(ds: Dataset, train_mask: np.ndarray) -> sp.csr_matrix:
    w = ds.event_weights()[train_mask]
    rows = ds.e_user[train_mask]
    cols = ds.post_community[ds.e_post[train_mask]]
    prior_w = np.zeros(len(ds.m_role), np.float32)
    for code, value in MEMBERSHIP_PRIOR.items():
        prior_w[ds.m_role == code] = value
    return confidence_matrix(
        np.concatenate([rows, ds.m_user]),
        np.concatenate([cols, ds.m_community]),
        np.concatenate([w, prior_w]),
        (ds.n_users, ds.n_communities),
    )


def fit_als(matrix: sp.csr_matrix, params: AlsParams, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Factor a user x item confidence matrix; returns (user_factors, item_factors) float32."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    model = AlternatingLeastSquares(
        factors=params.factors,
        regularization=params.regularization,
        alpha=params.alpha,
        iterations=params.iterations,
        random_state=params.seed,
        calculate_training_loss=False,
    )
    # implicit parallelises over users itself; a BLAS thread pool underneath oversubscribes
    # the cores (implicit warns and runs several times slower).
    with threadpool_limits(1, "blas"):
        model.fit(matrix, show_progress=progress)
    return np.ascontiguousarray(model.user_factors, dtype=np.float32), np.ascontiguousarray(model.item_factors, dtype=np.float32)
