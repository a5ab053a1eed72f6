"""Filter: drop what the user may not or need not see. Each filter is one rule and counts what it removed under its reason.

Privacy fails closed: a post is shown only when its record was read (PRESENT), and a
private community's post only when the user's membership of it was confirmed this
request. A missing record, an unreadable one, or memberships we could not read all mean
"not shown".
"""

from __future__ import annotations

import numpy as np

from core import contract
from service.pipeline import RankContext


class UnconfirmedFilter:
    reason = "unconfirmed"

    def keep(self, ctx: RankContext) -> np.ndarray:
        return (ctx.posts["flags"] & contract.FLAG_PRESENT) != 0


class OtherCommunityFilter:
    """With community_id set, only that community's posts (re-rank mode may be handed others)."""

    reason = "other_community"

    def keep(self, ctx: RankContext) -> np.ndarray:
        if ctx.community is None:
            return np.ones(ctx.size, dtype=bool)
        return ctx.posts["community"] == ctx.community


class DeletedFilter:
    reason = "deleted"

    def keep(self, ctx: RankContext) -> np.ndarray:
        return (ctx.posts["flags"] & contract.FLAG_DELETED) == 0


class RemovedFilter:
    """Posts a moderator of their community took out of feeds."""

    reason = "removed"

    def keep(self, ctx: RankContext) -> np.ndarray:
        return (ctx.posts["flags"] & contract.FLAG_REMOVED) == 0


class MutedCommunityFilter:
    """Posts of communities the user muted (the live graph, read in the user's round trip)."""

    reason = "muted"

    def keep(self, ctx: RankContext) -> np.ndarray:
        if not ctx.muted:
            return np.ones(ctx.size, dtype=bool)
        return ~np.isin(ctx.posts["community"], np.fromiter(ctx.muted, dtype=np.int32, count=len(ctx.muted)))


class TooOldFilter:
    """Posts older than max_age_days (0: off). Off too for a model trained on catalogue-like
    logs, whose "posts" are timeless items (the bundle then indexes every post, and its
    manifest says so with index_window_applied_days = null)."""

    reason = "too_old"

    def __init__(self, max_age_days: float):
        self.max_age_s = max_age_days * 86_400

    def keep(self, ctx: RankContext) -> np.ndarray:
        if self.max_age_s <= 0 or ctx.bundle.manifest.params.get("index_window_applied_days", 0) is None:
            return np.ones(ctx.size, dtype=bool)
        keep = ctx.posts["created_at"] >= ctx.now - self.max_age_s
        if ctx.pinned:  # a moderator may pin an old announcement: it stays until the pin ends
            keep |= np.fromiter((p in ctx.pinned for p in ctx.post_ids), dtype=bool, count=ctx.size)
        return keep


class PrivateCommunityFilter:
    reason = "private"

    def keep(self, ctx: RankContext) -> np.ndarray:
        # A private post passes only when the record says which community it is in and the
        # user's membership of exactly that community was read from Redis this request.
        private = (ctx.posts["flags"] & contract.FLAG_PRIVATE) != 0
        if not private.any():
            return np.ones(len(private), dtype=bool)
        if not ctx.memberships_confirmed or not ctx.user_roles:
            return ~private
        communities = [c for c, role in ctx.user_roles.items() if role > contract.ROLE_NONE]
        member = np.isin(ctx.posts["community"], np.array(communities, dtype=np.int32))
        return ~private | member


class BlockedAuthorFilter:
    """Posts by authors the user blocked (the block list is read in the user's round trip)."""

    reason = "blocked"

    def keep(self, ctx: RankContext) -> np.ndarray:
        if not ctx.blocked:
            return np.ones(ctx.size, dtype=bool)
        rows = ctx.bundle.user_row.rows(list(ctx.blocked))
        keep = ~np.isin(ctx.posts["author"], rows[rows >= 0])
        # Authors the model has not seen (created since training) are -1 in the record:
        # the live index knows who wrote each live post.
        unknown = np.flatnonzero(keep & (ctx.posts["author"] < 0))
        if len(unknown) and ctx.live is not None:
            author_of = ctx.live.author_of
            for i in unknown.tolist():
                if author_of(ctx.post_ids[i]) in ctx.blocked:
                    keep[i] = False
        return keep


class SeenFilter:
    """Posts the user has already seen (the newest contract.SEEN_READ_MAX of them)."""

    reason = "seen"

    def keep(self, ctx: RankContext) -> np.ndarray:
        if not ctx.seen:
            return np.ones(ctx.size, dtype=bool)
        seen, pinned = ctx.seen, ctx.pinned  # a pin stays on top until it expires, seen or not
        return np.fromiter((p not in seen or p in pinned for p in ctx.post_ids), dtype=bool, count=ctx.size)


class FilterCandidates:
    name = "filter"

    def __init__(self, filters: list):
        self.filters = filters

    def run(self, ctx: RankContext) -> None:
        for f in self.filters:
            if ctx.size == 0:
                return
            ctx.keep(f.keep(ctx), f.reason)


def default_filters(max_age_days: float) -> list:
    # Unconfirmed first: later filters may then trust every field of the record.
    return [
        UnconfirmedFilter(),
        OtherCommunityFilter(),
        DeletedFilter(),
        RemovedFilter(),
        PrivateCommunityFilter(),
        MutedCommunityFilter(),
        BlockedAuthorFilter(),
        SeenFilter(),
        TooOldFilter(max_age_days),
    ]
