"""Filter: drop what the user may not or need not see. Each filter is one rule and counts what it removed under its reason.

Each filter's `keep` answers a mask over the candidates (True: keep), or None when it keeps
every one (its rule does not apply to this request: the common case for most of them).

Privacy fails closed: a post is shown only when its record was read (PRESENT), and a
private community's post only when the user's membership of it was confirmed this
request. A missing record, an unreadable one, or memberships we could not read all mean
"not shown".
"""

from __future__ import annotations

import numpy as np

from core import contract
from service.pipeline import RankContext


def member_of(values: np.ndarray, members) -> np.ndarray:
    """values[i] in members (a few dozen ints at most), by binary search over the sorted
    members: np.isin's setup cost ~20 us a call, more than the search itself."""
    m = np.sort(np.fromiter(members, dtype=np.int64))
    if len(m) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(m, values), len(m) - 1)
    return m[pos] == values


class UnconfirmedFilter:
    reason = "unconfirmed"

    def keep(self, ctx: RankContext) -> np.ndarray | None:
        return (ctx.posts["flags"] & contract.FLAG_PRESENT) != 0


class OtherCommunityFilter:
    """With community_id set, only that community's posts (re-rank mode may be handed others)."""

    reason = "other_community"

    def keep(self, ctx: RankContext) -> np.ndarray | None:
        if ctx.community is None:
            return None
        return ctx.posts["community"] == ctx.community


class DeletedFilter:
    reason = "deleted"

    def keep(self, ctx: RankContext) -> np.ndarray | None:
        return (ctx.posts["flags"] & contract.FLAG_DELETED) == 0


class RemovedFilter:
    """Posts a moderator of their community took out of feeds."""

    reason = "removed"

    def keep(self, ctx: RankContext) -> np.ndarray | None:
        return (ctx.posts["flags"] & contract.FLAG_REMOVED) == 0


class MutedCommunityFilter:
    """Posts of communities the user muted (the live graph, read in the user's round trip)."""

    reason = "muted"

    def keep(self, ctx: RankContext) -> np.ndarray | None:
        if not ctx.muted:
            return None
        return ~member_of(ctx.posts["community"], ctx.muted)


class TooOldFilter:
    """Posts older than max_age_days (0: off). Off too for a model trained on catalogue-like
    logs, whose "posts" are timeless items (the bundle then indexes every post, and its
    manifest says so with index_window_applied_days = null)."""

    reason = "too_old"

    def __init__(self, max_age_days: float):
        self.max_age_s = max_age_days * 86_400

    def keep(self, ctx: RankContext) -> np.ndarray | None:
        if self.max_age_s <= 0 or ctx.bundle.manifest.params.get("index_window_applied_days", 0) is None:
            return None
        keep = ctx.posts["created_at"] >= ctx.now - self.max_age_s
        if ctx.pinned:  # a moderator may pin an old announcement: it stays until the pin ends
            keep |= np.fromiter((p in ctx.pinned for p in ctx.post_ids), dtype=bool, count=ctx.size)
        return keep


class PrivateCommunityFilter:
    reason = "private"

    def keep(self, ctx: RankContext) -> np.ndarray | None:
        # A private post passes only when the record says which community it is in and the
        # user's membership of exactly that community was read from Redis this request.
        private = (ctx.posts["flags"] & contract.FLAG_PRIVATE) != 0
        if not private.any():
            return None
        if not ctx.memberships_confirmed or not ctx.user_roles:
            return ~private
        member = member_of(
            ctx.posts["community"], (c for c, role in ctx.user_roles.items() if role > contract.ROLE_NONE)
        )
        return ~private | member


class BlockedAuthorFilter:
    """Posts by authors the user blocked (the block list is read in the user's round trip)."""

    reason = "blocked"

    def keep(self, ctx: RankContext) -> np.ndarray | None:
        if not ctx.blocked:
            return None
        rows = ctx.bundle.user_row.rows(list(ctx.blocked))
        keep = ~member_of(ctx.posts["author"], rows[rows >= 0].tolist())
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

    def keep(self, ctx: RankContext) -> np.ndarray | None:
        if not ctx.seen:
            return None
        seen, pinned = ctx.seen, ctx.pinned  # a pin stays on top until it expires, seen or not
        return np.fromiter((p not in seen or p in pinned for p in ctx.post_ids), dtype=bool, count=ctx.size)


class FilterCandidates:
    name = "filter"

    def __init__(self, filters: list):
        self.filters = filters

    def run(self, ctx: RankContext) -> None:
        # Every filter judges every candidate and the survivors are taken once at the end:
        # taking after each filter that dropped any cost a copy of every parallel array
        # (and of the id list) per filter. Each filter is still counted for what it alone
        # removed from what the filters before it kept, as when they ran one after another.
        keep = np.ones(ctx.size, dtype=bool)
        for f in self.filters:
            if not keep.any():
                break
            mask = f.keep(ctx)
            if mask is None:
                continue
            dropped = keep & ~mask
            n = int(np.count_nonzero(dropped))
            if n:
                ctx.removed[f.reason] += n
                keep &= ~dropped
        if not keep.all():
            ctx.take(np.flatnonzero(keep))


def default_filters(max_age_days: float) -> list:
    # Unconfirmed first: every candidate it drops is counted there, and what later filters
    # say of an unconfirmed (all-zero) record is discarded.
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
