"""Seen posts and blocked authors: per-user live keys in Redis (unversioned), read in the
user's round trip, filtered, and counted by reason."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import REGISTRY

from core import contract
from core.bundle import load_bundle
from nichefeed.v1 import ranking_pb2

USER = "u41"


def removed(reason: str) -> float:
    return REGISTRY.get_sample_value("nichefeed_filtered_total", {"reason": reason}) or 0.0


@pytest.fixture()
def live_keys(redis_client):
    yield redis_client
    redis_client.delete(contract.seen_key(USER), contract.blocked_key(USER))


def test_seen_posts_and_blocked_authors_are_filtered_and_counted(ranker, service, published, live_keys):
    bundle = load_bundle(published)
    public = ~np.asarray(bundle[contract.COMMUNITY_PRIVATE_FILE])
    candidates = [
        bundle.post_ids[r]
        for c, rows in sorted(bundle.community_recent.items())
        if public[c]
        for r in rows[:4].tolist()
    ]
    request = ranking_pb2.RankRequest(user_id=USER, limit=200, candidate_post_ids=candidates)
    before = [i.post_id for i in ranker.Rank(request, timeout=10).items]
    assert len(before) >= 10
    author_of = {p: int(bundle[contract.POST_AUTHOR_FILE][bundle.post_row[p]]) for p in before}
    blocked_author = author_of[before[0]]
    by_blocked = {p for p in before if author_of[p] == blocked_author}
    seen = [p for p in before if author_of[p] != blocked_author][:3]
    live_keys.zadd(contract.seen_key(USER), {p: 1 for p in seen})
    live_keys.sadd(contract.blocked_key(USER), bundle.user_ids[blocked_author])
    seen_before, blocked_before = removed("seen"), removed("blocked")

    after = [i.post_id for i in ranker.Rank(request, timeout=10).items]

    assert set(after) == set(before) - set(seen) - by_blocked
    assert removed("seen") == seen_before + len(seen)
    assert removed("blocked") == blocked_before + len(by_blocked)


def test_a_block_list_of_the_wrong_type_does_not_fail_the_request(ranker, live_keys):
    live_keys.set(contract.blocked_key(USER), "not a set")  # WRONGTYPE for SMEMBERS
    live_keys.set(contract.seen_key(USER), "not a zset")
    resp = ranker.Rank(ranking_pb2.RankRequest(user_id=USER, limit=5), timeout=10)
    assert len(resp.items) == 5 and not resp.degraded
