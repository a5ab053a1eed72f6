"""Score: every candidate gets the bundle's scorer's value over core.scoring's features."""

from __future__ import annotations

import numpy as np

from core import contract, hotness
from core.neighbours import CoEngaged, author_ties
from core.scoring import FeatureInputs, feature_matrix
from service.pipeline import RankContext


def lookup(table: dict[int, float], communities: np.ndarray, dtype, n_communities: int) -> np.ndarray:
    """table[c] for each candidate's community c (0 where absent), without a Python loop
    over the candidates: the table (a few dozen communities) is scattered into a dense
    array over the bundle's communities and gathered (a sort and binary search of the
    table cost ~4x as much per request)."""
    dense = np.zeros(n_communities, dtype=dtype)
    if table:
        dense[np.fromiter(table.keys(), dtype=np.int64, count=len(table))] = np.fromiter(
            table.values(), dtype=dtype, count=len(table)
        )
    return dense[communities]


def user_roles_of(ctx: RankContext, communities: np.ndarray) -> np.ndarray:
    """The user's role code in each candidate's community (0 where not a member).

    From ctx.user_roles, which is empty when memberships could not be confirmed: an
    unconfirmed membership scores like none (and private posts are filtered anyway)."""
    return lookup(ctx.user_roles, communities, np.uint8, len(ctx.bundle.community_ids))


def community_weights_of(ctx: RankContext, communities: np.ndarray) -> np.ndarray:
    """The user's weight in each candidate's community (0 where none), from the bundle."""
    return lookup(ctx.community_weights, communities, np.float32, len(ctx.bundle.community_ids))


def co_engagement_of(co: CoEngaged | None, ctx: RankContext) -> np.ndarray:
    """Each candidate's co-engagement for the user (0 for live posts and new users)."""
    if co is None:
        return np.zeros(ctx.size, dtype=np.float32)
    return co.of(ctx.rows)


def author_tie_of(co: CoEngaged | None, ctx: RankContext) -> np.ndarray:
    """How many of the user's history posts each candidate's author wrote (0 for new users
    and unknown authors)."""
    if co is None:
        return np.zeros(ctx.size, dtype=np.float32)
    return author_ties(co.history, ctx.bundle[contract.POST_AUTHOR_FILE], ctx.posts["author"])


class ScoreCandidates:
    name = "score"

    def run(self, ctx: RankContext) -> None:
        b, p = ctx.bundle, ctx.posts
        user_vec = np.asarray(ctx.user.vector, dtype=np.float32)
        communities = p["community"]
        co = ctx.user_co_engaged()
        ctx.features = feature_matrix(
            FeatureInputs(
                affinity=ctx.vectors @ user_vec,  # current vectors: bundle, or live (hydrate.candidate_vectors)
                community_affinity=np.asarray(b[contract.COMMUNITY_FACTORS_FILE]).take(communities, axis=0) @ user_vec,
                user_role=user_roles_of(ctx, communities),
                author_trust=p["author_trust"],
                age_seconds=ctx.now - p["created_at"],
                positives=p["positives"],
                negatives=p["negatives"],
                views=p["views"],
                community_size=np.asarray(b[contract.COMMUNITY_SIZE_FILE])[communities].astype(np.float32),
                hot=hotness.decayed(p["hot"], p["hot_at"], ctx.now, b.hot_half_life_s),
                community_weight=community_weights_of(ctx, communities),
                co_engagement=co_engagement_of(co, ctx),
                author_tie=author_tie_of(co, ctx),
                active_age_seconds=ctx.now - np.maximum(p["hot_at"], p["created_at"]),
            )
        )
        ctx.scores = b.scorer.score(ctx.features)
