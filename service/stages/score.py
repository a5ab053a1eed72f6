"""Stage 6: score every candidate with the bundle's scorer (service.scoring)."""
from __future__ import annotations

import numpy as np

from service import contract
from service.pipeline import RankContext
from service.scoring import feature_matrix


class ScoreCandidates:
    name = "score"

    def run(self, ctx: RankContext) -> None:
        b, p = ctx.bundle, ctx.posts
        rows = p["row"]
        vectors = np.asarray(b[contract.POST_VECTORS_FILE][rows])
        affinity = vectors @ np.asarray(ctx.user.vector, dtype=np.float32)
        member = np.isin(p["community"], np.fromiter(ctx.user_roles, dtype=np.int32, count=len(ctx.user_roles)))
        size = np.asarray(b[contract.COMMUNITY_SIZE_FILE])[p["community"]].astype(np.float32)
        ctx.features = feature_matrix(
            affinity, member, p["author_trust"], ctx.now - p["created_at"],
            p["positives"], p["negatives"], p["views"], size,
        )
        ctx.scores = b.scorer.score(ctx.features)
