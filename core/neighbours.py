"""Co-engagement: how much a post is engaged by the same people as the user's recent posts.

Item-based collaborative filtering, kept small enough to serve: for every post, its
NEIGHBOURS most similar posts (cosine on who engaged with them) and their similarities
are bundle arrays; each user's newest HISTORY engaged posts are a bundle array too. A
post's co-engagement for a user is the summed similarity of the user's history posts to
it. This module is the one computation: the service (retrieve and score stages, once per
request) and training (candidates and features) both build a CoEngaged with
`co_engaged` and read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEIGHBOURS = 20  # kept per post
HISTORY = 50  # newest engaged posts kept per user


@dataclass
class CoEngaged:
    """One user's co-engagement with every post their history points at."""

    rows: np.ndarray  # int64, sorted: posts some history post has as a neighbour
    totals: np.ndarray  # float32: their summed similarity
    history: np.ndarray  # the user's history rows (never proposed again)

    def of(self, candidates: np.ndarray) -> np.ndarray:
        """Co-engagement of each candidate row (0 where none, and for rows < 0)."""
        candidates = np.asarray(candidates)
        out = np.zeros(len(candidates), dtype=np.float32)
        if len(self.rows) == 0 or len(candidates) == 0:
            return out
        pos = np.clip(np.searchsorted(self.rows, candidates), 0, len(self.rows) - 1)
        hit = (self.rows[pos] == candidates) & (candidates >= 0)
        out[hit] = self.totals[pos[hit]]
        return out

    def nearest(self, limit: int) -> np.ndarray:
        """The most co-engaged rows (ties by lower row), history excluded, at most limit."""
        rows, totals = self.rows, self.totals
        if len(rows) == 0 or limit <= 0:
            return np.empty(0, dtype=np.int64)
        # rows is sorted and unique: the history's places in it by binary search (np.isin's
        # setup costs more than the search), and a stable sort by total alone puts tied
        # rows in ascending order, as a lexsort by (total, row) does.
        pos = np.minimum(np.searchsorted(rows, self.history), len(rows) - 1)
        drop = pos[rows[pos] == self.history]
        if len(drop):
            keep = np.ones(len(rows), dtype=bool)
            keep[drop] = False
            rows, totals = rows[keep], totals[keep]
        return rows[np.argsort(-totals, kind="stable")[:limit]]


def author_ties(history: np.ndarray, post_author: np.ndarray, authors: np.ndarray) -> np.ndarray:
    """How many of the user's history posts each of `authors` wrote (0 for authors < 0).

    history: the user's engaged post rows (-1 pads); post_author: the author of every post
    row (-1 unknown); authors: one author per candidate. A sort of the (at most 50) history
    authors and two binary searches per candidate, no Python loop."""
    history = np.asarray(history)
    authors = np.asarray(authors)
    out = np.zeros(len(authors), dtype=np.float32)
    history = history[history >= 0]
    if len(history) == 0 or len(authors) == 0:
        return out
    written = np.sort(np.asarray(post_author).take(history))
    written = written[written >= 0]
    if len(written) == 0:
        return out
    counts = np.searchsorted(written, authors, side="right") - np.searchsorted(written, authors, side="left")
    return np.where(authors >= 0, counts, 0).astype(np.float32)


def co_engaged(history: np.ndarray, neighbours: np.ndarray, sims: np.ndarray) -> CoEngaged:
    history = np.asarray(history)
    history = history[history >= 0]
    empty = CoEngaged(np.empty(0, np.int64), np.empty(0, np.float32), history)
    if len(history) == 0:
        return empty
    # take, not neighbours[history]: fancy indexing of a 2-D array by a row list is ~3x
    # slower (10 us against 3 us for 50 history rows of 20 neighbours at 1M posts).
    nb = np.asarray(neighbours).take(history, axis=0).ravel()
    sm = np.asarray(sims).take(history, axis=0).ravel()
    ok = nb >= 0
    if not ok.any():
        return empty
    rows, inverse = np.unique(nb[ok].astype(np.int64), return_inverse=True)
    totals = np.bincount(inverse, weights=sm[ok].astype(np.float64)).astype(np.float32)
    return CoEngaged(rows, totals, history)
