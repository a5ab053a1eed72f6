"""Stage 4: post embeddings from community, author and engagers (service.post_vectors).

Only engagements inside the training window move a post, so evaluation on the next
window sees posts exactly as serving would have seen them at the split.
"""
from __future__ import annotations

import numpy as np

from service import post_vectors
from training.als import AlsParams, confidence_matrix
from training.schema import Dataset


def post_embeddings(
    ds: Dataset,
    train_mask: np.ndarray,
    user_factors: np.ndarray,
    community_factors: np.ndarray,
    params: AlsParams,
) -> np.ndarray:
    m = confidence_matrix(
        ds.e_post[train_mask], ds.e_user[train_mask], ds.event_weights()[train_mask], (ds.n_posts, ds.n_users)
    ).tocoo()
    confidence = 1.0 + params.alpha * m.data
    engaged, weight = post_vectors.engager_item_vectors(
        user_factors, params.regularization, m.row, m.col, confidence, ds.n_posts
    )
    # An author's KnownFor vector: where their engaged posts landed, weighted by engagement.
    sums = np.zeros((ds.n_users, user_factors.shape[1]), dtype=np.float64)
    np.add.at(sums, ds.post_author, engaged * weight[:, None])
    totals = np.bincount(ds.post_author, weights=weight, minlength=ds.n_users)
    has = totals > 0
    author_vectors = np.zeros_like(sums, dtype=np.float32)
    author_vectors[has] = (sums[has] / totals[has, None]).astype(np.float32)
    prior = post_vectors.post_prior(
        community_factors[ds.post_community], author_vectors[ds.post_author], has[ds.post_author]
    )
    return post_vectors.blend(prior, engaged, weight)
