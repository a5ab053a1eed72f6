"""Stage 5: filters. Each filter is one rule and counts what it removed under its reason.

Privacy fails closed: a post is shown only when its record was read (PRESENT), and a
private community's post only when the user's membership of it was confirmed this
request. A missing record, an unreadable one, or memberships we could not read all mean
"not shown".
"""
from __future__ import annotations

import numpy as np

from service import contract
from service.pipeline import RankContext


class UnconfirmedFilter:
    reason = "unconfirmed"

    def keep(self, ctx: RankContext) -> np.ndarray:
        return (ctx.posts["flags"] & contract.FLAG_PRESENT) != 0


class DeletedFilter:
    reason = "deleted"

    def keep(self, ctx: RankContext) -> np.ndarray:
        return (ctx.posts["flags"] & contract.FLAG_DELETED) == 0


class TooOldFilter:
    reason = "too_old"

    def __init__(self, max_age_days: float):
        self.max_age_s = max_age_days * 86_400

    def keep(self, ctx: RankContext) -> np.ndarray:
        return ctx.posts["created_at"] >= ctx.now - self.max_age_s


class PrivateCommunityFilter:
    reason = "private"

    def keep(self, ctx: RankContext) -> np.ndarray:
        private = (ctx.posts["flags"] & contract.FLAG_PRIVATE) != 0
        if not private.any():
            return np.ones(len(private), dtype=bool)
        if not ctx.memberships_confirmed or not ctx.user_roles:
            return ~private
        member = np.isin(ctx.posts["community"], np.fromiter(ctx.user_roles, dtype=np.int32))
        return ~private | member


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
    return [UnconfirmedFilter(), DeletedFilter(), PrivateCommunityFilter(), TooOldFilter(max_age_days)]
