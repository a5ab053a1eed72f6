"""Co-engagement: how much a post is engaged by the same people as the user's recent posts.

Item-based collaborative filtering, kept small enough to serve: for every post, its
NEIGHBOURS most similar posts (cosine on who engaged with them) and their similarities
are bundle arrays; each user's newest HISTORY engaged posts are a bundle array too. A
candidate's co-engagement is the summed similarity of the user's history posts to it.
This module is the one computation: the service's score stage and training's feature
builder both call `co_engagement`.
"""

from __future__ import annotations

import numpy as np

NEIGHBOURS = 20  # kept per post
HISTORY = 50  # newest engaged posts kept per user


def co_engagement(history: np.ndarray, neighbours: np.ndarray, sims: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Summed similarity of the history rows' neighbours to each candidate row (0 for a
    candidate no history post points at, and for rows < 0: posts the bundle does not know)."""
    out = np.zeros(len(candidates), dtype=np.float32)
    history = history[history >= 0]
    if len(history) == 0 or len(candidates) == 0:
        return out
    nb = np.asarray(neighbours[history]).ravel()
    sm = np.asarray(sims[history]).ravel()
    ok = nb >= 0
    if not ok.any():
        return out
    rows, inverse = np.unique(nb[ok], return_inverse=True)
    totals = np.bincount(inverse, weights=sm[ok].astype(np.float64)).astype(np.float32)
    pos = np.clip(np.searchsorted(rows, candidates), 0, len(rows) - 1)
    hit = (rows[pos] == candidates) & (candidates >= 0)
    out[hit] = totals[pos[hit]]
    return out


def nearest_to_history(history: np.ndarray, neighbours: np.ndarray, sims: np.ndarray, limit: int) -> np.ndarray:
    """The rows most co-engaged with the user's history (highest summed similarity first,
    ties by lower row), history rows themselves excluded, at most `limit`: a candidate
    source (core/retrieval.py)."""
    history = history[history >= 0]
    if len(history) == 0 or limit <= 0:
        return np.empty(0, dtype=np.int64)
    nb = np.asarray(neighbours[history]).ravel()
    sm = np.asarray(sims[history]).ravel()
    ok = (nb >= 0) & ~np.isin(nb, history)
    if not ok.any():
        return np.empty(0, dtype=np.int64)
    rows, inverse = np.unique(nb[ok], return_inverse=True)
    totals = np.bincount(inverse, weights=sm[ok].astype(np.float64))
    order = np.lexsort((rows, -totals))[:limit]
    return rows[order].astype(np.int64)
