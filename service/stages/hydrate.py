"""Stages 2 and 4: hydrate the user (one Redis GET) and the candidates (one MGET).

When Redis cannot answer in time the request degrades instead of failing: the user's
vector comes from the bundle in memory, memberships count as unconfirmed (so no private
post can pass the privacy filter), and post records are rebuilt from the bundle.
"""
from __future__ import annotations

import numpy as np

from service import contract
from service.metrics import METRICS
from service.pipeline import NotFound, RankContext
from service.store import FeatureStore, StoreUnavailable

_fallback_user = METRICS.fallbacks.labels(reason="redis_user")
_fallback_posts = METRICS.fallbacks.labels(reason="redis_posts")


class HydrateUser:
    name = "hydrate_user"

    def __init__(self, store: FeatureStore):
        self.store = store

    def run(self, ctx: RankContext) -> None:
        bundle, user_id = ctx.bundle, ctx.query.user_id
        try:
            raw = self.store.user_record(bundle.version, user_id)
        except StoreUnavailable:
            _fallback_user.inc()
            ctx.degraded.append("feature store unavailable: user")
            row = bundle.user_row.get(user_id)
            if row is None:
                raise NotFound(f"user_id: unknown user {user_id!r}") from None
            vec = np.asarray(bundle[contract.USER_FACTORS_FILE][row])
            ctx.user = contract.UserRecord(vec, np.empty(0, np.int32), np.empty(0, np.uint8))
            return
        if raw is None:
            raise NotFound(f"user_id: unknown user {user_id!r} in model {bundle.version}")
        try:
            ctx.user = contract.decode_user(raw)
        except contract.ContractError as exc:
            raise NotFound(f"user_id: unreadable record for {user_id!r} ({exc})") from None
        ctx.user_roles = dict(zip(ctx.user.communities.tolist(), ctx.user.roles.tolist()))
        ctx.memberships_confirmed = True


class HydrateCandidates:
    name = "hydrate_candidates"

    def __init__(self, store: FeatureStore):
        self.store = store

    def run(self, ctx: RankContext) -> None:
        if ctx.degraded:
            # Redis already failed this request: do not spend the deadline on a second timeout.
            ctx.posts = records_from_bundle(ctx)
            return
        try:
            ctx.posts = contract.decode_posts(self.store.post_records(ctx.bundle.version, ctx.post_ids))
        except StoreUnavailable:
            _fallback_posts.inc()
            ctx.degraded.append("feature store unavailable: posts")
            ctx.memberships_confirmed = False
            ctx.user_roles = {}
            ctx.posts = records_from_bundle(ctx)


def records_from_bundle(ctx: RankContext) -> np.ndarray:
    """Post records as the bundle last knew them (deletions since then are unknown, so
    only public posts may be shown: the privacy filter sees unconfirmed memberships)."""
    b, rows = ctx.bundle, ctx.rows
    rec = np.zeros(len(rows), dtype=contract.POST_DTYPE)
    rec["row"] = rows
    rec["community"] = b[contract.POST_COMMUNITY_FILE][rows]
    rec["author"] = b[contract.POST_AUTHOR_FILE][rows]
    private = np.asarray(b[contract.COMMUNITY_PRIVATE_FILE])[rec["community"]]
    rec["flags"] = (contract.FLAG_PRESENT
                    | np.where(b[contract.POST_DELETED_FILE][rows], contract.FLAG_DELETED, 0)
                    | np.where(private, contract.FLAG_PRIVATE, 0)).astype(np.uint8)
    rec["created_at"] = b[contract.POST_CREATED_AT_FILE][rows]
    rec["author_trust"] = b[contract.POST_AUTHOR_TRUST_FILE][rows]
    rec["positives"] = b[contract.POST_POSITIVES_FILE][rows]
    rec["negatives"] = b[contract.POST_NEGATIVES_FILE][rows]
    rec["views"] = b[contract.POST_VIEWS_FILE][rows]
    return rec
