"""How a home feed's candidates are gathered: one rule for the service and for training.

The service's retrieve stage (service/stages/retrieve.py) calls these with post ids read
from Redis and FAISS; training's evaluation (training/features.py) with bundle rows from
the world as of the ranking time. So what is evaluated offline is what serves.

In order:
1. in-network: for each of the user's communities, heaviest first (where their
   engagement and memberships are), its hottest and its newest posts alternately; the
   communities taken round-robin (every group's best before any group's second), at
   most `in_network_share` of k;
2. co-engaged: the posts most engaged by the same people as the user's newest engaged
   posts (core/neighbours.py), at most `neighbour_share` of k;
3. out-of-network: the posts nearest the user's vector (the live index's fresh posts,
   then the ANN index), until k.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, zip_longest

import numpy as np

from core.flags import param

POPULAR_COMMUNITIES = 8  # public communities whose hot lists make "popular now" for a user with no groups
HOT_LIST_KEEP = 200  # posts kept in each community's hot list (Redis and training alike)


@dataclass(frozen=True)
class RetrievalParams:
    candidates: int = param(500, "candidates retrieved per request (k)")
    communities: int = param(32, "at most this many of the user's communities feed in-network candidates")
    per_list: int = param(50, "posts taken from each community's hot list and from its recent list")
    in_network_share: float = param(0.5, "at most this share of k from the user's communities")
    neighbour_share: float = param(0.2, "at most this share of k co-engaged with the user's history")

    @property
    def in_network_cap(self) -> int:
        return max(1, int(self.candidates * self.in_network_share))

    @property
    def neighbour_cap(self) -> int:
        return int(self.candidates * self.neighbour_share)


_END = object()  # zip_longest's filler: never a post id


def in_network(lists: Sequence[tuple[Sequence[Hashable], Sequence[Hashable]]], per_list: int, limit: int) -> list:
    """The in-network candidates: each community's queue (its hottest and newest posts
    alternately, the first per_list of each, each post once), the queues taken in turn
    (first of each, then second of each, ...), each post once, at most `limit`. Built by
    whole-list operations, not one step per item (a home feed: 32 communities, 250 places).

    Each queue is built only `depth` deep: the first `depth` of its hot and recent lists,
    interleaved, each item once, which is exactly the first items of the whole queue (at
    least `depth` of them when the lists hold distinct ids). Turns of the round robin below
    the shortest such truncated queue are therefore exact; when those turns do not fill
    `limit`, the depth doubles, up to per_list (then every queue is whole)."""
    if limit <= 0 or per_list <= 0 or not lists:
        return []
    depth = max(1, -(-limit // len(lists)))
    while True:
        depth = min(depth, per_list)
        queues, exact = [], None  # exact: turns known exactly (None: every queue is whole)
        for hot, recent in lists:
            h, r = hot[:depth], recent[:depth]
            both = list(chain.from_iterable(zip(h, r)))
            if len(h) != len(r):
                both += h[len(r) :] if len(h) > len(r) else r[len(h) :]
            queue = list(dict.fromkeys(both))
            if depth < max(min(len(hot), per_list), min(len(recent), per_list)):
                exact = len(queue) if exact is None else min(exact, len(queue))
            queues.append(queue)
        if exact is not None:
            queues = [q[:exact] for q in queues]
        out = dict.fromkeys(chain.from_iterable(zip_longest(*queues, fillvalue=_END)))
        out.pop(_END, None)
        if len(out) >= limit or exact is None:
            return list(out)[:limit]
        depth *= 2


def fill(found: list, ranked: Iterable[Hashable], k: int) -> list:
    """found, then ranked items not yet in it, up to k in all."""
    seen = set(found)
    out = list(found)
    for item in ranked:
        if len(out) >= k:
            break
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def hot_lists(hot: np.ndarray, post_community: np.ndarray) -> dict[int, np.ndarray]:
    """Each community's hot list from per-post hotness: rows with hotness, hottest first
    (ties by lower row), at most HOT_LIST_KEEP. What publish writes (from the bundle),
    what the hot path falls back to without Redis, and what training ranks with."""
    rows = np.flatnonzero(hot > 0)
    comm = np.asarray(post_community)[rows]
    order = np.lexsort((rows, -hot[rows], comm))
    rows, comm = rows[order], comm[order]
    cuts = np.flatnonzero(np.diff(comm)) + 1
    return {int(c[0]): r[:HOT_LIST_KEEP] for c, r in zip(np.split(comm, cuts), np.split(rows, cuts)) if len(r)}
