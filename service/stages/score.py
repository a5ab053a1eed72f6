"""Score: every candidate gets the bundle's scorer's value over core.scoring's features."""

from __future__ import annotations

import numpy as np

from core import contract
from core.scoring import feature_matrix
from service.pipeline import RankContext


def user_roles_of(ctx: RankContext, communities: np.ndarray) -> np.ndarray:
    """The user's role code in each candidate's community (0 where not a member).

    From ctx.user_roles, which is empty when memberships could not be confirmed: an
    unconfirmed membership scores like none (and private posts are filtered anyway)."""
    if not ctx.user_roles:
        return np.zeros(len(communities), dtype=np.uint8)
    keys = np.fromiter(ctx.user_roles.keys(), dtype=np.int64, count=len(ctx.user_roles))
    vals = np.fromiter(ctx.user_roles.values(), dtype=np.uint8, count=len(ctx.user_roles))
    order = np.argsort(keys)
    keys, vals = keys[order], vals[order]
    pos = np.clip(np.searchsorted(keys, communities), 0, len(keys) - 1)
    return np.where(keys[pos] == communities, vals[pos], 0).astype(np.uint8)


class ScoreCandidates:
    name = "score"

    def run(self, ctx: RankContext) -> None:
        b, p = ctx.bundle, ctx.posts
        user_vec = np.asarray(ctx.user.vector, dtype=np.float32)
        affinity = ctx.vectors @ user_vec  # current vectors: bundle, or live (hydrate.candidate_vectors)
        community_affinity = np.asarray(b[contract.COMMUNITY_FACTORS_FILE])[p["community"]] @ user_vec
        size = np.asarray(b[contract.COMMUNITY_SIZE_FILE])[p["community"]].astype(np.float32)
        ctx.features = feature_matrix(
            affinity,
            community_affinity,
            user_roles_of(ctx, p["community"]),
            p["author_trust"],
            ctx.now - p["created_at"],
            p["positives"],
            p["negatives"],
            p["views"],
            size,
        )
        ctx.scores = b.scorer.score(ctx.features)
