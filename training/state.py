"""What the world looked like at a moment: memberships, post counters, author standing.

Every consumer asks for the state "as of" a time, so nothing downstream can peek past
it: the scorer is fitted on the state at the inner split, evaluation ranks with the
state at the split, and the bundle (serving) carries the state at the end of the data.

Author standing goes beyond the role: a post's author_trust is the role prior
(core.scoring.ROLE_STANDING) moved by the author's track record in that community,
how their earlier posts there were received (positives and negatives per view, shrunk
toward the community's own rate so a newcomer with one lucky post is not a star).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from core import hotness as hotness_rule
from core.retrieval import RetrievalParams
from core.scoring import MEMBER_WEIGHT, NON_MEMBER_STANDING, ROLE_STANDING
from training import schema
from training.neighbours import user_history

TRACK_RECORD_VIEWS = 20.0  # views at which the track record weighs as much as the role
TRACK_RECORD_SHARE = 0.5  # how far a track record can move standing off the role prior


@dataclass
class WorldState:
    as_of: int
    m_user: np.ndarray  # memberships known at as_of
    m_community: np.ndarray
    m_role: np.ndarray
    positives: np.ndarray  # float32 [n_posts] weighted positive engagements before as_of
    negatives: np.ndarray
    views: np.ndarray  # engagement events of any kind (counts)
    author_trust: np.ndarray  # float32 [n_posts]
    community_size: np.ndarray  # int32 [n_comm] members
    hot: np.ndarray  # float32 [n_posts]: positive engagement decayed to as_of (core.hotness)
    hot_half_life_h: float
    community_weight: sp.csr_matrix  # float32 [n_users, n_comm]: engagement there + MEMBER_WEIGHT if a member
    history: np.ndarray  # int32 [n_users, HISTORY]: newest engaged post rows (-1 pads), core.neighbours
    # int64 [n_posts]: the post's newest positive engagement before as_of, else its creation
    # (what a post record's hot_at holds: core/contract.py POST_DTYPE)
    last_active: np.ndarray

    def weight_lookup(self, users: np.ndarray, communities: np.ndarray) -> np.ndarray:
        """The users' weights in these communities (0 where none), pairwise."""
        W = self.community_weight
        if W.nnz == 0:
            return np.zeros(len(users), dtype=np.float32)
        n_c = W.shape[1]
        # CSR with sorted indices: row-major keys are already in ascending order.
        keys = np.repeat(np.arange(W.shape[0], dtype=np.int64), np.diff(W.indptr)) * n_c + W.indices
        q = np.asarray(users, np.int64) * n_c + np.asarray(communities, np.int64)
        pos = np.clip(np.searchsorted(keys, q), 0, len(keys) - 1)
        return np.where(keys[pos] == q, W.data[pos], 0).astype(np.float32)

    def affinities(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user, community, weight) of every weight, by user, heaviest first within a user
        (ties by lower community): the bundle's affinity arrays, in the order they serve."""
        W = self.community_weight
        users = np.repeat(np.arange(W.shape[0], dtype=np.int32), np.diff(W.indptr))
        order = np.lexsort((W.indices, -W.data, users))
        return users[order], W.indices[order].astype(np.int32), W.data[order].astype(np.float32)

    def top_communities(self, user: int, n: int) -> np.ndarray:
        """The user's communities by weight, heaviest first (ties by lower index), at most n."""
        W = self.community_weight
        lo, hi = W.indptr[user], W.indptr[user + 1]
        comms, weights = W.indices[lo:hi], W.data[lo:hi]
        order = np.lexsort((comms, -weights))[:n]
        return comms[order]

    def role_lookup(self, n_communities: int):
        """A function (users, communities) -> role codes (0 where no membership)."""
        keys = self.m_user.astype(np.int64) * n_communities + self.m_community
        order = np.argsort(keys)
        keys, roles = keys[order], self.m_role[order]

        def lookup(users: np.ndarray, communities: np.ndarray) -> np.ndarray:
            if len(keys) == 0:
                return np.zeros(len(users), dtype=np.uint8)
            q = np.asarray(users, np.int64) * n_communities + communities
            pos = np.clip(np.searchsorted(keys, q), 0, len(keys) - 1)
            return np.where(keys[pos] == q, roles[pos], 0).astype(np.uint8)

        return lookup


def derive_memberships(ds: schema.Dataset, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For logs without memberships.csv: a user is a member of a community where they
    engaged positively at least twice, or authored a post (events under mask only)."""
    pos = mask & (ds.event_weights() > 0)
    n_c = max(ds.n_communities, 1)
    has_author = ds.post_author >= 0
    authored = ds.post_author[has_author].astype(np.int64) * n_c + ds.post_community[has_author]
    key = np.concatenate(
        [ds.e_user[pos].astype(np.int64) * n_c + ds.post_community[ds.e_post[pos]], authored, authored]
    )
    uniq, counts = np.unique(key, return_counts=True)
    uniq = uniq[counts >= 2]
    return (uniq // n_c).astype(np.int32), (uniq % n_c).astype(np.int32)


def post_counters(ds: schema.Dataset, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = ds.event_weights()[mask]
    posts = ds.e_post[mask]
    positives = np.bincount(posts, weights=np.maximum(w, 0), minlength=ds.n_posts).astype(np.float32)
    negatives = np.bincount(
        posts, weights=np.isin(ds.e_kind[mask], schema.NEGATIVE_KINDS) * ds.e_count[mask], minlength=ds.n_posts
    ).astype(np.float32)
    views = np.bincount(posts, weights=ds.e_count[mask], minlength=ds.n_posts).astype(np.float32)
    return positives, negatives, views


def author_standing(
    ds: schema.Dataset, role_of, positives: np.ndarray, negatives: np.ndarray, views: np.ndarray
) -> np.ndarray:
    """author_trust per post: role prior moved by the author's record in that community."""
    trust = np.full(ds.n_posts, 0.0, dtype=np.float32)
    known = ds.post_author >= 0
    role = role_of(ds.post_author[known], ds.post_community[known])
    trust[known] = np.where(role > 0, ROLE_STANDING[role], NON_MEMBER_STANDING)
    if not known.any():
        return trust
    # Net reception per (author, community), compared with the community's average.
    n_c = max(ds.n_communities, 1)
    key = ds.post_author[known].astype(np.int64) * n_c + ds.post_community[known]
    uniq, inv = np.unique(key, return_inverse=True)
    net = (positives - 2.0 * negatives)[known]
    a_net = np.bincount(inv, weights=net)
    a_views = np.bincount(inv, weights=views[known])
    c_rate = np.bincount(ds.post_community, weights=positives - 2.0 * negatives, minlength=n_c) / np.maximum(
        np.bincount(ds.post_community, weights=views, minlength=n_c), 1.0
    )
    comm = (uniq % n_c).astype(np.int64)
    rate = (a_net + TRACK_RECORD_VIEWS * c_rate[comm]) / (a_views + TRACK_RECORD_VIEWS)
    # Above the group's norm lifts, below lowers; tanh keeps it bounded, the views term
    # keeps a thin record close to the role prior.
    evidence = a_views / (a_views + TRACK_RECORD_VIEWS)
    lift = TRACK_RECORD_SHARE * evidence * np.tanh(4.0 * (rate - c_rate[comm]))
    trust[known] = np.clip(trust[known] + lift[inv], 0.0, 1.0)
    return trust


def member_engagers(ds: schema.Dataset, mask: np.ndarray, state: WorldState) -> np.ndarray:
    """Distinct members of each post's community who engaged with it positively (under
    mask): what lets the service say "3 members of X engaged"."""
    pos = mask & (ds.event_weights() > 0)
    users, posts = ds.e_user[pos], ds.e_post[pos]
    member = state.role_lookup(ds.n_communities)(users, ds.post_community[posts]) > 0
    pairs = np.unique(posts[member].astype(np.int64) * max(ds.n_users, 1) + users[member])
    return np.bincount(pairs // max(ds.n_users, 1), minlength=ds.n_posts).astype(np.int32)


def hotness(ds: schema.Dataset, mask: np.ndarray, as_of: int, half_life_h: float) -> np.ndarray:
    """Each post's positive engagement under mask, decayed to as_of (core.hotness)."""
    w = np.maximum(ds.event_weights()[mask], 0)
    decayed = hotness_rule.decayed(w, ds.e_ts[mask], as_of, half_life_h * 3600.0)
    return np.bincount(ds.e_post[mask], weights=decayed, minlength=ds.n_posts).astype(np.float32)


def last_positive(ds: schema.Dataset, mask: np.ndarray) -> np.ndarray:
    """Each post's newest positive engagement time under mask (0 where none)."""
    pos = mask & (ds.event_weights() > 0)
    out = np.zeros(ds.n_posts, dtype=np.int64)
    np.maximum.at(out, ds.e_post[pos], ds.e_ts[pos].astype(np.int64))
    return out


def community_weights(ds: schema.Dataset, mask: np.ndarray, m_user: np.ndarray, m_comm: np.ndarray) -> sp.csr_matrix:
    """users x communities: positive engagement weight there (under mask), plus
    MEMBER_WEIGHT where the user is a member: where the user's attention is."""
    pos = mask & (ds.event_weights() > 0)
    rows = np.concatenate([ds.e_user[pos], m_user])
    cols = np.concatenate([ds.post_community[ds.e_post[pos]], m_comm])
    vals = np.concatenate([ds.event_weights()[pos], np.full(len(m_user), MEMBER_WEIGHT, np.float32)])
    W = sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=(ds.n_users, ds.n_communities))
    W.sum_duplicates()
    return _heaviest(W, RetrievalParams().communities)


def _heaviest(W: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Each row's n largest entries (ties by lower column): what the service holds of a
    user (the bundle's affinity arrays), so training computes with exactly that."""
    W = W.tocsr()
    counts = np.diff(W.indptr)
    if len(counts) and counts.max() > n:
        keep = np.zeros(W.nnz, dtype=bool)
        for u in np.flatnonzero(counts > n):
            lo, hi = W.indptr[u], W.indptr[u + 1]
            order = np.lexsort((W.indices[lo:hi], -W.data[lo:hi]))[:n]
            keep[lo + order] = True
        keep[np.repeat(counts <= n, counts)] = True
        rows = np.repeat(np.arange(W.shape[0]), counts)
        W = sp.csr_matrix((W.data[keep], (rows[keep], W.indices[keep])), shape=W.shape)
    W.sort_indices()
    return W


class LogAggregates:
    """The arrays state_as_of takes from the events before as_of, each one row a post, a
    user or a (user, community) pair, computed here in numpy over the event columns. The
    Spark engine's twin (training/spark/state.py) computes the same arrays with Spark
    aggregations; state_as_of assembles the state from either."""

    def __init__(self, ds: schema.Dataset, as_of: int):
        ds.require_every_event("the state (views and negatives are counted)")
        self.ds, self.as_of, self.before = ds, as_of, ds.e_ts < as_of

    def memberships(self) -> tuple[np.ndarray, np.ndarray]:
        return derive_memberships(self.ds, self.before)

    def counters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return post_counters(self.ds, self.before)

    def hot(self, half_life_h: float) -> np.ndarray:
        return hotness(self.ds, self.before, self.as_of, half_life_h)

    def community_weight(self, m_user: np.ndarray, m_comm: np.ndarray) -> sp.csr_matrix:
        return community_weights(self.ds, self.before, m_user, m_comm)

    def history(self) -> np.ndarray:
        return user_history(self.ds, self.before)

    def last_positive(self) -> np.ndarray:
        return last_positive(self.ds, self.before)

    def member_engagers(self, state: WorldState) -> np.ndarray:
        return member_engagers(self.ds, self.before, state)


def log_aggregates(ds: schema.Dataset, as_of: int, engine: str = "implicit"):
    """LogAggregates, or its Spark twin for the Spark engine."""
    if engine == "spark":
        from training.spark.state import SparkLogAggregates

        return SparkLogAggregates(ds, as_of)
    return LogAggregates(ds, as_of)


def state_as_of(
    ds: schema.Dataset, as_of: int, memberships_derived: bool, hot_half_life_h: float = 24.0, engine: str = "implicit"
) -> WorldState:
    log = log_aggregates(ds, as_of, engine)
    if memberships_derived:
        m_user, m_comm = log.memberships()
        m_role = np.full(len(m_user), 1, dtype=np.uint8)
    else:
        known = ds.m_joined_at < as_of
        m_user, m_comm, m_role = ds.m_user[known], ds.m_community[known], ds.m_role[known]
    positives, negatives, views = log.counters()
    state = WorldState(
        as_of=int(as_of),
        m_user=m_user,
        m_community=m_comm,
        m_role=m_role,
        positives=positives,
        negatives=negatives,
        views=views,
        author_trust=np.zeros(ds.n_posts, np.float32),
        community_size=np.bincount(m_comm, minlength=ds.n_communities).astype(np.int32),
        hot=log.hot(hot_half_life_h),
        hot_half_life_h=float(hot_half_life_h),
        community_weight=log.community_weight(m_user, m_comm),
        history=log.history(),
        last_active=np.maximum(log.last_positive(), ds.post_created_at.astype(np.int64)),
    )
    # Per post, from the per-post arrays above and the memberships: the same code for both engines.
    state.author_trust = author_standing(ds, state.role_lookup(ds.n_communities), positives, negatives, views)
    return state
