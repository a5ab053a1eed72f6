"""Retrieve: the candidates of a request.

Three modes, by what the caller asked:
- re-rank: exactly the caller's candidate_post_ids (unknown ids are dropped, counted);
  with community_id also set, only those of that community;
- community feed: the recent posts of community_id (read in the user's round trip);
- home feed (and community feed): the posts moderators pinned in the user's groups first;
  then core/retrieval.py's rule, the one training evaluates: in-network, the hot and
  the recent posts of the user's heaviest communities (read in the user's round trip),
  round-robin, at most half of `k`; then the posts most co-engaged with the user's history
  (bundle arrays, at most a fifth of `k`); then out-of-network from FAISS (the post vectors
  nearest the user's vector) up to `k` candidates.
Out-of-network candidates also come from the live index (posts written since the bundle
was trained, service/live_index.py). exclude_post_ids are removed in every mode.
"""

from __future__ import annotations

import numpy as np

from core import retrieval
from core.retrieval import RetrievalParams
from service.pipeline import RankContext
from service.store import FeatureStore, StoreUnavailable

# The row of a post that came as an id (Redis lists, pins, the live index, the caller):
# its record says it (contract.POST_DTYPE "row"), read by hydrate_candidates in the same
# MGET that confirms the post. A binary search of the ids here cost ~0.4 ms a request at
# 1M posts (cache misses over the sorted ids), for rows the record holds anyway.
UNRESOLVED = -2
# Neighbours asked of FAISS beyond the places left (plus a quarter of them): at 1M posts
# at most 46 of FAISS's answers were already candidates (400 sampled home feeds).
ANN_MARGIN = 32


class RetrieveCandidates:
    name = "retrieve"

    def __init__(self, params: RetrievalParams, live_share: float = 0.25, store: FeatureStore | None = None):
        self.params = params
        self.k = params.candidates
        self.live_k = max(1, int(self.k * live_share))  # fresh posts searched beside FAISS
        self.store = store  # None: no prefetch, hydrate_candidates reads every record

    def run(self, ctx: RankContext) -> None:
        q, b, rp = ctx.query, ctx.bundle, self.params
        if q.candidate_post_ids:
            found = dict.fromkeys(q.candidate_post_ids, UNRESOLVED)  # with community_id: see filters
        elif ctx.community is not None:
            found = dict.fromkeys(list(ctx.pinned) + ctx.recent.get(ctx.community, [])[: self.k], UNRESOLVED)
        else:
            # Moderators' pins in the user's groups first; then ctx.recent lists the
            # user's communities heaviest first (hydrate_user).
            lists = [(ctx.hot.get(c, []), ids) for c, ids in ctx.recent.items()]
            found = dict.fromkeys(
                list(ctx.pinned) + retrieval.in_network(lists, rp.per_list, rp.in_network_cap), UNRESOLVED
            )
            co = ctx.user_co_engaged()  # built by hydrate_user while Redis answered
            if co is not None:
                add_rows(found, b, co.nearest(rp.neighbour_cap))
            vec = np.ascontiguousarray(ctx.user.vector, dtype=np.float32)
            if ctx.live is not None:
                for p in ctx.live.search(vec, self.live_k):
                    found.setdefault(p, UNRESOLVED)
            if len(found) < self.k:  # else FAISS could add nothing
                self.prefetch(ctx, found)
                try:
                    add_nearest(found, b.index, b, vec, self.k)
                except BaseException:
                    ctx.abandon_reads()
                    raise
        if q.exclude_post_ids:
            before = len(found)
            for p in q.exclude_post_ids:
                found.pop(p, None)
            ctx.removed["excluded"] += before - len(found)
        ctx.post_ids = list(found)
        ctx.rows = np.fromiter(found.values(), dtype=np.int64, count=len(found))

    def prefetch(self, ctx: RankContext, found: dict[str, int]) -> None:
        """Send the MGET of the records of the candidates found so far (in-network,
        co-engaged, live: 300-350 of a home feed's 500) before the FAISS search, so that
        Redis reads them while FAISS searches (it releases the GIL): hydrate_candidates
        then asks only for FAISS's ones, on the same connection, and reads both replies.
        The same records are read as by one MGET after retrieve; only the waiting
        overlaps. Not when the request is already degraded (no Redis read follows)."""
        if self.store is None or ctx.degraded or not found:
            return
        ids = list(found)
        try:
            ctx.prefetch = self.store.send_post_records(ctx.bundle.version, ids, ctx.deadline)
        except StoreUnavailable as exc:
            ctx.prefetch = exc  # hydrate_candidates degrades with it, without a second try
        if ctx.prefetch is not None:
            ctx.prefetched = ids


def add_nearest(found: dict[str, int], index, b, vec: np.ndarray, k: int) -> None:
    """FAISS's nearest rows not yet among the candidates, in order, until there are k.

    The search asks only for as many neighbours as could still be taken, plus a margin
    for those already found (in-network or co-engaged): an IVF search keeps a heap of
    its k best, and at 1M posts asking for 500 cost ~1.4x asking for the ~200 a home
    feed usually needs (the other sources fill 300-350 places). The k' best of the same
    probed lists are the first k' of the k best, except that posts at exactly the same
    distance (posts sharing a vector) may come in another order: measured against one
    search for k, the candidates were identical for 400 home feeds on the IVF994 index
    and for 2000 on the mips-IVF5964 one (1M posts). When the margin was too small (more
    overlap than expected), the search is repeated for k and the rows already added are
    skipped."""
    need = k - len(found)
    ask = min(k, need + need // 4 + ANN_MARGIN)
    while True:
        _, labels = index.search(vec[None, :], ask)
        rows = labels[0][labels[0] >= 0]  # FAISS ids are bundle rows
        add_rows(found, b, rows, k)
        if len(found) >= k or ask >= k or len(rows) < ask:
            return
        ask = k


def add_rows(found: dict[str, int], b, rows: np.ndarray, k: int | None = None) -> None:
    """Bundle rows not yet among the candidates, in order, until there are k (None: all).
    Ids are made only for as many rows as could still be taken: a FAISS answer of 500 rows
    usually fills the last hundred or two places."""
    start = 0
    while start < len(rows) and (k is None or len(found) < k):
        chunk = rows[start:] if k is None else rows[start : start + k - len(found)]
        for p, r in zip(b.post_ids.take(chunk), chunk.tolist()):
            found.setdefault(p, r)
        start += len(chunk)
