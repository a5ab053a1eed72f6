"""Respond: the top `limit` items, with reasons drawn from the features that scored them."""

from __future__ import annotations

import numpy as np

from core import contract
from core.scoring import FEATURES
from service.pipeline import RankContext, RankedItem

_MEMBER = FEATURES.index("is_member")
_TRUST = FEATURES.index("author_trust")
_FRESH = FEATURES.index("freshness")
_AFFINITY = FEATURES.index("affinity")
_HOT = FEATURES.index("hot")
HOT_REASON = float(np.log1p(1.0))  # at least one engagement's worth of heat right now


_ROLE_WORD = {contract.ROLE_MODERATOR: "moderator", contract.ROLE_TRUSTED: "trusted member"}


def reasons_for(ctx: RankContext, i: int, community: str) -> list[str]:
    """Why item i is here, from the feature values that scored it and its post record."""
    x = ctx.features[i]
    out = []
    if ctx.post_ids[i] in ctx.pinned:
        out.append(f"pinned by the moderators of {community}")
    if ctx.popular:
        out.append(f"popular now in {community}")
    if x[_MEMBER] > 0:
        role = ctx.user_roles.get(int(ctx.posts["community"][i]), contract.ROLE_MEMBER)
        out.append(f"{_ROLE_WORD.get(role, 'member')} of {community}")
        if x[_FRESH] > 0.5:
            out.append(f"new in a group you joined ({community})")
    elif x[_AFFINITY] > 0 and not ctx.popular:
        out.append(f"close to groups you are in ({community})")
    engagers = int(ctx.posts["member_engagers"][i])
    if engagers >= 1:
        out.append(f"{engagers} member{'s' if engagers > 1 else ''} of {community} engaged")
    else:
        positives = float(ctx.posts["positives"][i])
        if positives >= 1:
            out.append(f"{int(positives)} engagements in {community}")
    if x[_HOT] >= HOT_REASON:
        out.append(f"active now in {community}")
    if x[_TRUST] >= 0.8:
        out.append(f"author is trusted in {community}")
    return out


class BuildResponse:
    name = "respond"

    def run(self, ctx: RankContext) -> None:
        b = ctx.bundle
        n = min(ctx.size, ctx.query.limit)
        comm = ctx.posts["community"][:n].tolist()
        author = ctx.posts["author"][:n].tolist()
        scores = ctx.scores[:n].tolist()
        items = []
        live_author = ctx.live.author_of if ctx.live is not None else (lambda _: "")
        authors = b.user_ids.take(np.maximum(ctx.posts["author"][:n], 0))
        for i in range(n):
            community = b.community_ids[comm[i]]
            items.append(
                RankedItem(
                    post_id=ctx.post_ids[i],
                    score=scores[i],
                    community_id=community,
                    # an author the model has not seen: the live index knows who wrote a live post
                    author_id=authors[i] if author[i] >= 0 else live_author(ctx.post_ids[i]),
                    reasons=reasons_for(ctx, i, community) if ctx.query.explain else [],
                )
            )
        ctx.items = items
