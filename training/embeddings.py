"""Post embeddings from community, author and engagers (core.post_vectors).

A post starts from its prior (its community's vector blended with its author's KnownFor
vector) and is pulled toward its ALS factor by how much engagement it has: the ALS post
factor is exactly the implicit-ALS item step given the final user factors (implicit
solves items last), the exact item step for these engagers, so no second solve is needed. The
shrinkage is core.post_vectors.blend, the rule the live write path uses too.

Only engagements inside the training window move a post, so evaluation on the next
window sees posts exactly as serving would have seen them at the split.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from core import post_vectors
from training.als import AlsModel
from training.schema import Dataset


def author_vectors(ds: Dataset, model: AlsModel) -> tuple[np.ndarray, np.ndarray]:
    """KnownFor: where each author's engaged posts landed, weighted by engagement."""
    d = model.user_factors.shape[1]
    known = ds.post_author >= 0
    authors = ds.post_author[known]
    weight = model.post_weight[known].astype(np.float64)
    # author x post weight matrix times post factors: a weighted sum per author in one product.
    spread = sp.csr_matrix((weight, (authors, np.arange(len(authors)))), shape=(ds.n_users, len(authors)))
    sums = np.asarray(spread @ model.post_factors[known].astype(np.float64))
    totals = np.bincount(authors, weights=weight, minlength=ds.n_users)
    has = totals > 0
    vectors = np.zeros((ds.n_users, d), dtype=np.float32)
    vectors[has] = (sums[has] / totals[has, None]).astype(np.float32)
    return vectors, has


def post_embeddings(ds: Dataset, model: AlsModel) -> tuple[np.ndarray, np.ndarray]:
    """(post vectors, authors' KnownFor vectors): the bundle keeps the latter so that the
    write path places a new post by the same prior."""
    vectors, has = author_vectors(ds, model)
    author = np.maximum(ds.post_author, 0)
    has_author = (ds.post_author >= 0) & has[author]
    prior = post_vectors.post_prior(model.community_factors[ds.post_community], vectors[author], has_author)
    return post_vectors.blend(prior, model.post_factors, model.post_weight), vectors
