"""Training's side of co-engagement (core/neighbours.py): each user's newest engaged
posts as of a time, and every post's nearest posts by who engaged with them."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from core.neighbours import HISTORY, NEIGHBOURS
from training.schema import Dataset

CHUNK = 2000  # posts per sparse product: bounds memory on large catalogues


def newest_engaged(ds: Dataset, mask: np.ndarray, keep: int = HISTORY) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, post, rank) of each user's `keep` newest distinct positive engagements under
    mask, rank 0 the newest (ties by lower post row)."""
    pos = np.flatnonzero(mask & (ds.event_weights() > 0))
    users, posts, ts = ds.e_user[pos], ds.e_post[pos], ds.e_ts[pos]
    order = np.lexsort((-ts, posts, users))  # per (user, post): newest first
    users, posts, ts = users[order], posts[order], ts[order]
    first = np.ones(len(users), dtype=bool)
    first[1:] = (users[1:] != users[:-1]) | (posts[1:] != posts[:-1])
    users, posts, ts = users[first], posts[first], ts[first]
    order = np.lexsort((posts, -ts, users))  # per user: newest first
    users, posts = users[order], posts[order]
    rank = np.arange(len(users)) - np.searchsorted(users, users)
    kept = rank < keep
    return users[kept], posts[kept], rank[kept]


def history_matrix(history: np.ndarray, n_posts: int) -> sp.csr_matrix:
    """users x posts: 1 on each post of each user's history (user_history's array, -1 pads)."""
    users, slots = np.nonzero(history >= 0)
    return sp.csr_matrix(
        (np.ones(len(users), np.float32), (users, history[users, slots])), shape=(history.shape[0], n_posts)
    )


def user_history(ds: Dataset, mask: np.ndarray, keep: int = HISTORY) -> np.ndarray:
    """int32 [n_users, keep]: each user's newest engaged post rows, newest first, -1 padded."""
    users, posts, rank = newest_engaged(ds, mask, keep)
    out = np.full((ds.n_users, keep), -1, dtype=np.int32)
    out[users, rank] = posts
    return out


def item_neighbours(history: np.ndarray, n_posts: int, k: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """(int32 [n_posts, k] neighbour rows, -1 padded; float32 [n_posts, k] cosine), most
    similar first, from the users' histories (user_history's array, which the state holds:
    per user, not per event, so either engine's state gives them)."""
    H = history_matrix(history, n_posts).tocsc()
    counts = np.asarray(H.sum(axis=0)).ravel()
    norms = np.sqrt(counts) + 1e-9
    Hn = H.multiply(1.0 / norms[None, :]).tocsc()
    HnT = Hn.T.tocsr()
    neighbours = np.full((n_posts, k), -1, dtype=np.int32)
    sims = np.zeros((n_posts, k), dtype=np.float32)
    engaged = np.flatnonzero(counts > 0)
    for lo in range(0, len(engaged), CHUNK):
        rows = engaged[lo : lo + CHUNK]
        S = (HnT[rows] @ Hn).tocsr()  # [chunk, posts]
        for i, r in enumerate(rows.tolist()):
            a, b = S.indptr[i], S.indptr[i + 1]
            cols, vals = S.indices[a:b], S.data[a:b]
            other = cols != r
            cols, vals = cols[other], vals[other]
            if len(cols) > k:
                top = np.argpartition(-vals, k - 1)[:k]
                cols, vals = cols[top], vals[top]
            order = np.lexsort((cols, -vals))
            neighbours[r, : len(order)] = cols[order]
            sims[r, : len(order)] = vals[order]
    return neighbours, sims
