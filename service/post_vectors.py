"""How a post gets its vector: one rule shared by training and the live write path.

A post starts from a prior, its community's vector blended with its author's
("KnownFor": where the author's posts usually land), so a post nobody has touched yet is
already placed (cold start is the norm: posts live for days). Each engager then pulls it
toward them: the engagers' part is the exact implicit-ALS item step for that post (the
vector ALS would give an item with these engagers, consistent in scale with the
community vectors) and the two parts are mixed by a shrinkage weight, so one like moves
a post a little and fifty likes move it most of the way (in the spirit of SimClusters'
tweet embeddings, which follow their engagers).
"""
from __future__ import annotations

import numpy as np

AUTHOR_SHARE = 0.3  # weight of the author's KnownFor vector in the prior
PRIOR_STRENGTH = 4.0  # engagement weight at which the engagers' part and the prior weigh equally


def post_prior(community_vectors: np.ndarray, author_vectors: np.ndarray | None, has_author: np.ndarray | None) -> np.ndarray:
    """Prior vectors: community, blended with the author's vector where one is known."""
    prior = np.array(community_vectors, dtype=np.float32, copy=True)
    if author_vectors is not None and has_author is not None and has_author.any():
        prior[has_author] = (1 - AUTHOR_SHARE) * prior[has_author] + AUTHOR_SHARE * author_vectors[has_author]
    return prior


def engager_item_vectors(
    user_factors: np.ndarray,
    regularization: float,
    post_rows: np.ndarray,
    users: np.ndarray,
    confidence: np.ndarray,
    n_posts: int,
    chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """The ALS item step for every post with engagers.

    post_rows/users/confidence describe (post, engager, confidence c>=1) triples. For each
    post y = (X'X + sum (c-1) x x' + reg I)^-1 sum c x. Returns (vectors [n_posts, d],
    total confidence weight [n_posts]); posts without engagers get zeros and weight 0.
    """
    X = np.asarray(user_factors, dtype=np.float64)
    d = X.shape[1]
    base = X.T @ X + regularization * np.eye(d)
    out = np.zeros((n_posts, d), dtype=np.float32)
    weight = np.zeros(n_posts, dtype=np.float32)
    if len(post_rows) == 0:
        return out, weight
    order = np.argsort(post_rows, kind="stable")
    post_rows, users, confidence = post_rows[order], users[order], confidence[order].astype(np.float64)
    np.add.at(weight, post_rows, (confidence - 1.0).astype(np.float32))
    posts, starts = np.unique(post_rows, return_index=True)
    bounds = np.append(starts, len(post_rows))
    for lo in range(0, len(posts), chunk):
        hi = min(lo + chunk, len(posts))
        seg = slice(bounds[lo], bounds[hi])
        local_starts = bounds[lo:hi] - bounds[lo]
        xs = X[users[seg]]
        c = confidence[seg]
        outer = (c - 1.0)[:, None, None] * xs[:, :, None] * xs[:, None, :]
        A = base + np.add.reduceat(outer, local_starts, axis=0)
        b = np.add.reduceat(c[:, None] * xs, local_starts, axis=0)
        out[posts[lo:hi]] = np.linalg.solve(A, b[:, :, None])[:, :, 0]
    return out, weight


def blend(prior: np.ndarray, engaged: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Shrink the engagers' vector toward the prior by how much engagement there is."""
    share = (weight / (weight + PRIOR_STRENGTH)).astype(np.float32)[:, None]
    return np.ascontiguousarray((1 - share) * prior + share * engaged, dtype=np.float32)
