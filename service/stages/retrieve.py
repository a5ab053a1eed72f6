"""Stage 3: retrieve candidates.

Three modes, by what the caller asked:
- re-rank: exactly the caller's candidate_post_ids (unknown ids are dropped, counted);
- community feed: the newest indexed posts of community_id;
- home feed: out-of-network from FAISS (nearest post vectors to the user's vector) plus
  in-network, the newest posts of each community the user belongs to.
"""
from __future__ import annotations

import numpy as np

from service.pipeline import NotFound, RankContext


class RetrieveCandidates:
    name = "retrieve"

    def __init__(self, k: int, per_community: int = 50):
        self.k = k
        self.per_community = per_community

    def run(self, ctx: RankContext) -> None:
        q, b = ctx.query, ctx.bundle
        if q.candidate_post_ids:
            rows = [b.post_row.get(p, -1) for p in q.candidate_post_ids]
            unknown = rows.count(-1)
            if unknown:
                ctx.removed["unknown_post"] += unknown
            rows = np.array([r for r in rows if r >= 0], dtype=np.int64)
        elif q.community_id:
            c = b.community_row.get(q.community_id)
            if c is None:
                raise NotFound(f"community_id: unknown community {q.community_id!r}")
            rows = b.community_recent.get(c, np.empty(0, np.int64))[: self.k]
        else:
            vec = np.ascontiguousarray(ctx.user.vector, dtype=np.float32)[None, :]
            _, labels = b.index.search(vec, self.k)
            out_of_network = labels[0][labels[0] >= 0]
            in_network = [b.community_recent.get(c, np.empty(0, np.int64))[: self.per_community]
                          for c in ctx.user_roles]
            rows = np.concatenate([*in_network, out_of_network]) if in_network else out_of_network
        rows = _unique_in_order(rows.astype(np.int64))
        if q.exclude_post_ids:
            excluded = np.array([b.post_row.get(p, -1) for p in q.exclude_post_ids], dtype=np.int64)
            keep = ~np.isin(rows, excluded)
            ctx.removed["excluded"] += int(len(rows) - keep.sum())
            rows = rows[keep]
        ctx.rows = rows
        ctx.post_ids = [b.post_ids[r] for r in rows.tolist()]


def _unique_in_order(rows: np.ndarray) -> np.ndarray:
    _, first = np.unique(rows, return_index=True)
    return rows[np.sort(first)]
