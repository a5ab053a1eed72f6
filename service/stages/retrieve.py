"""Retrieve: the candidates of a request.

Three modes, by what the caller asked:
- re-rank: exactly the caller's candidate_post_ids (unknown ids are dropped, counted);
  with community_id also set, only those of that community;
- community feed: the recent posts of community_id (read in the user's round trip);
- home feed: in-network, the recent posts of each community the user belongs to (read
  in the user's round trip; at most half of `k`), then out-of-network from FAISS (the
  post vectors nearest the user's vector) up to `k` candidates.
Out-of-network candidates also come from the live index (posts written since the bundle
was trained, service/live_index.py). exclude_post_ids are removed in every mode.
"""

from __future__ import annotations

import numpy as np

from service.pipeline import RankContext


class RetrieveCandidates:
    name = "retrieve"

    def __init__(self, k: int, per_community: int = 50, live_share: float = 0.25):
        self.k = k
        self.per_community = per_community
        self.live_k = max(1, int(k * live_share))  # fresh posts searched beside FAISS

    def run(self, ctx: RankContext) -> None:
        q, b = ctx.query, ctx.bundle
        if q.candidate_post_ids:
            found = self._rows_of(b, q.candidate_post_ids)  # with community_id: see filters
        elif ctx.community is not None:
            found = self._rows_of(b, ctx.recent.get(ctx.community, [])[: self.k])
        else:
            # In-network first (the recent lists hold live posts too), capped at half of k,
            # taken round-robin: every group's newest post before any group's second, so a
            # cap never cuts the fresh head of a group that happens to be listed last.
            lists = [ids[: self.per_community] for ids in ctx.recent.values()]
            in_network = [ids[i] for i in range(self.per_community) for ids in lists if i < len(ids)]
            found = self._rows_of(b, in_network, limit=self.k // 2 or 1)
            vec = np.ascontiguousarray(ctx.user.vector, dtype=np.float32)
            if ctx.live is not None:
                for p in ctx.live.search(vec, self.live_k):
                    found.setdefault(p, b.post_row.get(p, -1))
            _, labels = b.index.search(vec[None, :], self.k)
            post_ids = b.post_ids
            for r in labels[0].tolist():  # FAISS ids are bundle rows: no lookup needed
                if len(found) >= self.k:
                    break
                if r >= 0:
                    found.setdefault(post_ids[r], r)
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
    def _rows_of(b, post_ids: list[str], limit: int | None = None) -> dict[str, int]:
        """post id -> bundle row (-1 if the bundle does not know it), first occurrence kept."""
        found: dict[str, int] = {}
        post_row = b.post_row
        for p in post_ids:
            if p not in found:
                if limit is not None and len(found) >= limit:
                    break
                found[p] = post_row.get(p, -1)
        return found
