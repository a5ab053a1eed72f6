"""How a post gets its vector: one rule shared by training and the live write path.

A post starts from a prior, its community's vector blended with its author's
("KnownFor": where the author's posts usually land), so a post nobody has touched yet is
already placed (cold start is the norm: posts live for days). Each engager then pulls it
toward them: the engagers' part is the implicit-ALS item factor for that post (in
training, the factor ALS fitted; live, the item step from running sums, see
engaged_from_stats) and the two parts are mixed by a shrinkage weight, so one like moves
a post a little and fifty likes move it most of the way (in the spirit of SimClusters'
tweet embeddings, which follow their engagers).
"""

from __future__ import annotations

import numpy as np

AUTHOR_SHARE = 0.3  # weight of the author's KnownFor vector in the prior
PRIOR_STRENGTH = 4.0  # engagement weight at which the engagers' part and the prior weigh equally


def post_prior(
    community_vectors: np.ndarray, author_vectors: np.ndarray | None, has_author: np.ndarray | None
) -> np.ndarray:
    """Prior vectors: community, blended with the author's vector where one is known."""
    prior = np.array(community_vectors, dtype=np.float32, copy=True)
    if author_vectors is not None and has_author is not None and has_author.any():
        prior[has_author] = (1 - AUTHOR_SHARE) * prior[has_author] + AUTHOR_SHARE * author_vectors[has_author]
    return prior


def fold_in_gram(user_factors: np.ndarray, regularization: float) -> np.ndarray:
    """(X'X + reg I)^-1 over the model's user factors: computed once per model version."""
    X = np.asarray(user_factors, dtype=np.float64)
    return np.linalg.inv(X.T @ X + regularization * np.eye(X.shape[1])).astype(np.float32)


def engaged_from_stats(confidence_weighted_sum: np.ndarray, gram_inv: np.ndarray) -> np.ndarray:
    """The engagers' part for live engagement: the ALS item step from running sums.

    The exact step is (X'X + sum (c-1) x x' + reg I)^-1 sum c x; the live path keeps only
    sum c x per post in Redis (a d x d matrix per post would not fit the hot keys), so
    it drops the per-post correction term. That over-trusts a post with few, strong
    engagers a little; `blend` shrinks such posts toward their prior anyway.
    """
    return confidence_weighted_sum @ gram_inv.T


def blend(prior: np.ndarray, engaged: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Shrink the engagers' vector toward the prior by how much engagement there is."""
    share = (weight / (weight + PRIOR_STRENGTH)).astype(np.float32)[:, None]
    return np.ascontiguousarray((1 - share) * prior + share * engaged, dtype=np.float32)
