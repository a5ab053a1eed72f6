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


class RetrieveCandidates:
    name = "retrieve"

    def __init__(self, params: RetrievalParams, live_share: float = 0.25):
        self.params = params
        self.k = params.candidates
        self.live_k = max(1, int(self.k * live_share))  # fresh posts searched beside FAISS

    def run(self, ctx: RankContext) -> None:
        q, b, rp = ctx.query, ctx.bundle, self.params
        if q.candidate_post_ids:
            found = self._rows_of(b, q.candidate_post_ids)  # with community_id: see filters
        elif ctx.community is not None:
            found = self._rows_of(b, list(ctx.pinned) + ctx.recent.get(ctx.community, [])[: self.k])
        else:
            # Moderators' pins in the user's groups first; then ctx.recent lists the
            # user's communities heaviest first (hydrate_user).
            queues = [retrieval.community_queue(ctx.hot.get(c, []), ids, rp.per_list) for c, ids in ctx.recent.items()]
            found = self._rows_of(b, list(ctx.pinned) + retrieval.round_robin(queues, rp.in_network_cap))
            co = ctx.co_engaged = b.co_engaged(q.user_id)
            if co is not None:
                rows = co.nearest(rp.neighbour_cap)
                for p, r in zip(b.post_ids.take(rows), rows.tolist()):
                    found.setdefault(p, r)
            vec = np.ascontiguousarray(ctx.user.vector, dtype=np.float32)
            if ctx.live is not None:
                posts = ctx.live.search(vec, self.live_k)
                for p, r in zip(posts, b.post_row.rows(posts).tolist()):
                    found.setdefault(p, r)
            _, labels = b.index.search(vec[None, :], self.k)
            rows = labels[0][labels[0] >= 0]  # FAISS ids are bundle rows
            for p, r in zip(b.post_ids.take(rows), rows.tolist()):
                if len(found) >= self.k:
                    break
                found.setdefault(p, r)
        if q.exclude_post_ids:
            before = len(found)
            for p in q.exclude_post_ids:
                found.pop(p, None)
            ctx.removed["excluded"] += before - len(found)
        # Posts the bundle does not know are live posts (or unknown ids): row -1. Their
        # record decides in hydration; a post without one is dropped as unconfirmed.
        ctx.post_ids = list(found)
        ctx.rows = np.fromiter(found.values(), dtype=np.int64, count=len(found))

    @staticmethod
    def _rows_of(b, post_ids: list[str]) -> dict[str, int]:
        """post id -> bundle row (-1 if the bundle does not know it), first occurrence
        kept, looked up in one call."""
        unique = list(dict.fromkeys(post_ids))
        return dict(zip(unique, b.post_row.rows(unique).tolist()))
