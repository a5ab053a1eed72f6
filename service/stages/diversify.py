"""Stage 7: re-rank for diversity so that one group or one author cannot flood the feed.

Greedy by score: a candidate is taken while its community and its author are under
their caps; the rest wait and only fill the feed when nothing else is left. A cap of 0
turns that cap off.
"""
from __future__ import annotations

import math

import numpy as np

from service.pipeline import RankContext


class DiversifyCandidates:
    name = "diversify"

    def __init__(self, community_share: float = 0.3, per_author: int = 2):
        self.community_share = community_share
        self.per_author = per_author

    def run(self, ctx: RankContext) -> None:
        if ctx.size == 0:
            return
        order = np.argsort(-ctx.scores, kind="stable")
        limit = ctx.query.limit
        per_comm = max(2, math.ceil(self.community_share * limit)) if self.community_share > 0 else 0
        if not per_comm and not self.per_author:
            ctx.take(order[:limit])
            return
        comm = ctx.posts["community"][order].tolist()
        author = ctx.posts["author"][order].tolist()
        taken: list[int] = []
        deferred: list[int] = []
        n_comm: dict[int, int] = {}
        n_author: dict[int, int] = {}
        for i, pos in enumerate(order.tolist()):
            c, a = comm[i], author[i]
            if (per_comm and n_comm.get(c, 0) >= per_comm) or (self.per_author and a >= 0 and n_author.get(a, 0) >= self.per_author):
                deferred.append(pos)
                continue
            taken.append(pos)
            n_comm[c] = n_comm.get(c, 0) + 1
            n_author[a] = n_author.get(a, 0) + 1
            if len(taken) == limit:
                break
        ctx.take(np.array((taken + deferred)[:limit], dtype=np.int64))
