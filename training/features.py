"""Offline candidates and features, through the service's own retrieval and scoring code.

`CandidateSource.for_users` gathers candidates with core/retrieval.py, the rule the
service's retrieve stage applies: each of the user's heaviest communities' hot and recent
lists round-robin, then the posts nearest the user's vector; minus private posts of groups
they are not in and posts they already engaged with. `features` builds the per-(user,
post) inputs from a WorldState and calls core.scoring.feature_matrix, the function the
service calls on the hot path, so the scorer is fitted and evaluated on what will serve.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from core import hotness, retrieval
from core.neighbours import author_ties, co_engaged
from core.retrieval import RetrievalParams
from core.scoring import FeatureInputs, feature_matrix
from training.schema import Dataset
from training.state import WorldState


@dataclass
class Model:
    """The vectors a ranking needs (from a fit, or from a bundle)."""

    user_factors: np.ndarray
    community_factors: np.ndarray
    post_vectors: np.ndarray
    author_vectors: np.ndarray | None = None  # KnownFor per user (zeros: not an author yet)
    neighbours: np.ndarray | None = None  # int32 [n_posts, k] by co-engagement (core/neighbours.py)
    neighbour_sims: np.ndarray | None = None


# top_k works on blocks of this many rows, spread over the machine's cores: each row is
# selected alone, so the blocks give the very same answer, and a block's working copies
# stay in cache. 256 rows x 200k columns over 2 cores, k = 10, 50, 500: 0.021, 0.024,
# 0.042 s; argpartition over each whole row (before 2026-11-27) took 0.29, 0.34, 0.37 s
# (and 0.41 s in one piece, on one core). The default world's tuning and evaluation make
# hundreds of such calls.
TOP_K_ROWS = 16
# A row's threshold comes from the maxima of this many blocks per selected item: more
# blocks, a tighter threshold and fewer survivors to sort, but a longer maxima pass.
BLOCKS_PER_ITEM = 4
# Blocks of at least this many items are consecutive items (a max along the row's memory);
# shorter ones interleave (16 x 200k, k = 500: 1.8 ms for the maxima of 2000 blocks of
# 100 consecutive items, 0.34 ms interleaved; k = 10: 0.34 ms consecutive, 2.6 interleaved).
CONTIGUOUS_BLOCK = 1000
# A row whose threshold lets more than this share of its items through is selected by
# argpartition instead: sorting them is the slower way. That is a row of many tied scores
# (a count-based baseline's zeros for a user with few counted posts), or one whose best
# items share a block. Sorting a 66k row's survivors costs ~5 ms, argpartition ~0.4 ms.
CROWDED_SHARE = 1 / 16


@functools.cache
def _top_k_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="top-k")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first (ties by lower index within
    the k; which of several items tied at the k-th place is taken is argpartition's)."""
    k = min(k, scores.shape[1])
    blocks = [scores[lo : lo + TOP_K_ROWS] for lo in range(0, len(scores), TOP_K_ROWS)]
    parts = list(_top_k_pool().map(lambda block: _block_top_k(block, k), blocks))
    return np.concatenate(parts) if parts else np.empty((0, k), np.intp)


def _block_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """top_k of a few rows. Each row's k-th largest score is at least the k-th largest of
    its blocks' maxima (k blocks hold an item that high), so only the items at or above
    that threshold, a few per block, are sorted: one max and one compare pass over the
    row instead of a selection over all of it (5-17x faster on 66k-1M columns). A row
    whose k-th and k+1-th items tie, or whose threshold lets a large share of it through
    (CROWDED_SHARE), is selected by argpartition over the whole row, so that which tied
    item is taken, and so every evaluation figure, is what it was."""
    n_rows, n = scores.shape
    size = n // (BLOCKS_PER_ITEM * k) if k else 0
    if size < 2:
        return _argpartition_top_k(scores, k)
    whole = (n // size) * size
    if size >= CONTIGUOUS_BLOCK:  # blocks of consecutive items
        maxima = scores[:, :whole].reshape(n_rows, n // size, size).max(axis=2)
    else:  # short blocks reduce slowly one by one: block j is every (n // size)-th item from j
        maxima = scores[:, :whole].reshape(n_rows, size, n // size).max(axis=1)
    if whole < n:
        maxima = np.concatenate([maxima, scores[:, whole:].max(axis=1, keepdims=True)], axis=1)
    threshold = np.partition(maxima, maxima.shape[1] - k, axis=1)[:, maxima.shape[1] - k]
    survives = scores >= threshold[:, None]
    whole_row = np.zeros(n_rows, bool)  # rows argpartition selects over the whole row
    if np.count_nonzero(survives) > CROWDED_SHARE * n:  # one pass: may a row be crowded?
        whole_row = np.count_nonzero(survives, axis=1) > CROWDED_SHARE * n
    calm = np.flatnonzero(~whole_row)
    top = np.empty((n_rows, k), np.intp)
    if len(calm):
        if len(calm) < n_rows:
            survives = survives[calm]
        # flatnonzero and divmod: nonzero of a 2-d mask costs ~10x as much
        rows, cols = np.divmod(np.flatnonzero(survives), n)  # rows: positions in calm
        vals = scores[calm[rows] if len(calm) < n_rows else rows, cols]
        order = np.lexsort((cols, -vals, rows))  # by row, best first, ties by lower index
        rows, cols, vals = rows[order], cols[order], vals[order]
        starts = np.searchsorted(rows, np.arange(len(calm)))
        counts = np.diff(np.append(starts, len(rows)))  # at least k each
        top[calm] = cols[starts[:, None] + np.arange(k)]
        after = np.minimum(starts + k, len(rows) - 1)
        whole_row[calm] = (counts > k) & (vals[after] == vals[starts + k - 1])  # tied at the k-th place
    # Crowded rows, and rows whose k-th and k+1-th items tie: argpartition over the whole
    # row takes the same items (the k best are one set where no tie straddles the k-th
    # place; where one does, argpartition's pick is the reference), in the same order.
    if whole_row.any():
        top[whole_row] = _argpartition_top_k(scores[whole_row], k)
    return top


def _argpartition_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1)


def seen_matrix(ds: Dataset, mask: np.ndarray) -> sp.csr_matrix:
    """users x posts: 1 where the user engaged positively under mask (never re-recommended)."""
    pos = mask & (ds.event_weights() > 0)
    m = sp.csr_matrix(
        (np.ones(int(pos.sum()), np.float32), (ds.e_user[pos], ds.e_post[pos])), shape=(ds.n_users, ds.n_posts)
    )
    m.sum_duplicates()
    return m


class CandidateSource:
    """Per-user candidates over a fixed catalogue (rows servable at the ranking time)."""

    def __init__(
        self,
        ds: Dataset,
        state: WorldState,
        model: Model,
        catalogue: np.ndarray,
        seen: sp.csr_matrix,
        params: RetrievalParams | None = None,
    ):
        self.ds, self.state, self.model = ds, state, model
        self.catalogue = catalogue
        self.seen = seen
        self.params = params or RetrievalParams()
        comm = ds.post_community[catalogue]
        created = ds.post_created_at[catalogue]
        order = np.lexsort((catalogue, -created, comm))
        self.recent_rows = catalogue[order]
        self.recent_bounds = np.searchsorted(comm[order], np.arange(ds.n_communities + 1))
        self.hot = retrieval.hot_lists(state.hot, ds.post_community)
        self.in_catalogue = np.zeros(ds.n_posts, dtype=bool)
        self.in_catalogue[catalogue] = True
        self.private = ds.community_private.astype(bool)
        self.col_of = np.full(ds.n_posts, -1, np.int64)
        self.col_of[catalogue] = np.arange(len(catalogue))
        self.priv_cols = np.flatnonzero(self.private[comm])
        self.priv_comm = comm[self.priv_cols]
        self._private_hidden: dict[int, np.ndarray] = {}  # user -> hidden columns, reused by every method
        order_m = np.argsort(state.m_user, kind="stable")
        self.m_comm = state.m_community[order_m]
        self.m_bounds = np.searchsorted(state.m_user[order_m], np.arange(ds.n_users + 1))

    def memberships(self, user: int) -> np.ndarray:
        return self.m_comm[self.m_bounds[user] : self.m_bounds[user + 1]]

    def in_network(self, user: int) -> list[int]:
        """The user's in-network candidates (core.retrieval), as the service would read
        them: hot lists hold any post with engagement (old ones are filtered later),
        recent lists only servable posts."""
        p = self.params
        lists = []
        empty = np.empty(0, np.int64)
        for c in self.state.top_communities(user, p.communities).tolist():
            hot = self.hot.get(c, empty)[: p.per_list]
            recent = self.recent_rows[self.recent_bounds[c] : self.recent_bounds[c] + p.per_list]
            lists.append((hot.tolist(), recent.tolist()))
        return retrieval.in_network(lists, p.per_list, p.in_network_cap)

    def co_engaged(self, user: int) -> list[int]:
        """The posts most co-engaged with the user's history (core/neighbours.py)."""
        m = self.model
        if m is None or m.neighbours is None:
            return []
        co = co_engaged(self.state.history[user], m.neighbours, m.neighbour_sims)
        return co.nearest(self.params.neighbour_cap).tolist()

    def for_users(self, users: np.ndarray, chunk: int = 256) -> list[np.ndarray]:
        out = []
        V = self.model.post_vectors[self.catalogue]
        k = self.params.candidates
        for lo in range(0, len(users), chunk):
            batch = users[lo : lo + chunk]
            scores = self.model.user_factors[batch] @ V.T
            self.hide(scores, batch)
            top = self.catalogue[top_k(scores, k)]
            for i, u in enumerate(batch):
                found = retrieval.fill(self.in_network(u), self.co_engaged(u), k)
                rows = np.array(retrieval.fill(found, top[i].tolist(), k), dtype=np.int64)
                rows = rows[self.in_catalogue[rows]]  # what the filters drop: deleted, too old, unknown
                comms = self.memberships(u)
                ok = ~self.private[self.ds.post_community[rows]] | np.isin(self.ds.post_community[rows], comms)
                seen = self.seen.indices[self.seen.indptr[u] : self.seen.indptr[u + 1]]
                ok &= ~np.isin(rows, seen)
                out.append(rows[ok])
        return out

    def hide(self, scores: np.ndarray, batch: np.ndarray) -> None:
        """-inf, in catalogue columns, where a user may not or need not see a post: private
        posts of groups they are not in, posts they already engaged with. Every evaluated
        method ranks under this same rule."""
        hidden = []
        for u in batch.tolist():
            hide = self._private_hidden.get(u)
            if hide is None:
                hide = self._private_hidden[u] = self.priv_cols[~np.isin(self.priv_comm, self.memberships(u))]
            hidden.append(hide)
        rows = np.repeat(np.arange(len(batch)), [len(h) for h in hidden])
        if len(rows):
            scores[rows, np.concatenate(hidden)] = -np.inf
        # The batch's seen posts in one take of the seen matrix's rows.
        seen = self.seen[batch]
        cols = self.col_of[seen.indices]
        rows = np.repeat(np.arange(len(batch)), np.diff(seen.indptr))
        inside = cols >= 0
        scores[rows[inside], cols[inside]] = -np.inf


def features(
    ds: Dataset, state: WorldState, model: Model, users: np.ndarray, posts: np.ndarray, now: int
) -> np.ndarray:
    """feature_matrix for (users[i], posts[i]) pairs, as the service would build it at `now`.

    Each user's pairs are one request (the service's request-relative features are taken
    over them): pass every candidate of a user, not a sample."""
    comm = ds.post_community[posts]
    uf = model.user_factors[users]
    # As of `now`, from the value a post record holds (as of the post's last activity).
    half_life_s = state.hot_half_life_h * 3600.0
    hot = hotness.decayed(
        *hotness.as_of_last_activity(state.hot[posts], state.as_of, state.last_active[posts], half_life_s),
        now,
        half_life_s,
    )
    return feature_matrix(
        FeatureInputs(
            affinity=np.einsum("ij,ij->i", uf, model.post_vectors[posts]),
            community_affinity=np.einsum("ij,ij->i", uf, model.community_factors[comm]),
            user_role=state.role_lookup(ds.n_communities)(users, comm),
            author_trust=state.author_trust[posts],
            age_seconds=now - ds.post_created_at[posts],
            positives=state.positives[posts],
            negatives=state.negatives[posts],
            views=state.views[posts],
            community_size=state.community_size[comm].astype(np.float32),
            hot=hot,
            community_weight=state.weight_lookup(users, comm),
            co_engagement=co_engagement_pairs(state, model, users, posts),
            author_tie=author_tie_pairs(state, ds.post_author, users, posts),
            active_age_seconds=now - state.last_active[posts],
        ),
        requests=users,
    )


def by_user(users: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(user, the positions of that user's pairs), one per distinct user: per-user
    computations over pair arrays, done once per user as the service does per request."""
    if len(users) == 0:
        return
    order = np.argsort(users, kind="stable")
    for idx in np.split(order, np.flatnonzero(np.diff(users[order])) + 1):
        yield int(users[idx[0]]), idx


def author_tie_pairs(state: WorldState, post_author: np.ndarray, users: np.ndarray, posts: np.ndarray) -> np.ndarray:
    """core.neighbours.author_ties for (users[i], posts[i]) pairs, per user as the service
    computes it from the same history."""
    out = np.zeros(len(users), dtype=np.float32)
    for u, idx in by_user(users):
        out[idx] = author_ties(state.history[u], post_author, post_author[posts[idx]])
    return out


def co_engagement_pairs(state: WorldState, model: Model, users: np.ndarray, posts: np.ndarray) -> np.ndarray:
    """core.neighbours co-engagement for (users[i], posts[i]) pairs, one CoEngaged per user
    as the service builds it."""
    out = np.zeros(len(users), dtype=np.float32)
    if model.neighbours is None:
        return out
    for u, idx in by_user(users):
        out[idx] = co_engaged(state.history[u], model.neighbours, model.neighbour_sims).of(posts[idx])
    return out
