"""The write path seen through Rank: new posts reach feeds in under a second, deletions
at once, and live posts survive a service restart. Real redis-server, real gRPC."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
import redis

from core import contract
from core.embedded_redis import EmbeddedRedis, free_port
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc, writes_pb2_grpc
from nichefeed.v1 import writes_pb2 as wpb
from service.app import Service
from tests.conftest import service_config
from tests.live_helpers import vector_of
from training import publish as publishing

POLL_LIMIT_S = 1.0  # the promise: retrievable within a second of the ack
FULL = 1000  # a limit above any candidate count: the whole filtered, ranked candidate list


@pytest.fixture(scope="module")
def redis_server(tiny_bundle, tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-live"), port=free_port()).start()
    publishing.publish(tiny_bundle, redis.Redis.from_url(server.url))
    yield server
    server.stop()


class Running:
    def __init__(self, bundle, url):
        self.svc = Service(service_config(bundle, live_poll_s=0.05, max_limit=FULL), url).start(metrics=False)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.svc.port}")
        self.ranker = ranking_pb2_grpc.FeedRankerStub(self.channel)
        self.writer = writes_pb2_grpc.FeedWriterStub(self.channel)

    def stop(self):
        self.channel.close()
        self.svc.stop(grace=1)


@pytest.fixture
def running(tiny_bundle, redis_server):
    r = Running(tiny_bundle, redis_server.url)
    yield r
    r.stop()


def member_and_community(bundle, public: bool | None = None):
    users = np.asarray(bundle[contract.MEMBERSHIP_USER_FILE])
    comms = np.asarray(bundle[contract.MEMBERSHIP_COMMUNITY_FILE])
    private = np.asarray(bundle[contract.COMMUNITY_PRIVATE_FILE])
    for u, c in zip(users.tolist(), comms.tolist()):
        if public is None or bool(private[c]) != public:
            return bundle.user_ids[u], bundle.community_ids[c]
    raise AssertionError("no such membership in the tiny world")


def feed(running, user, limit=200, **kw):
    return [
        i.post_id
        for i in running.ranker.Rank(ranking_pb2.RankRequest(user_id=user, limit=limit, **kw), timeout=5).items
    ]


def wait_for(predicate, limit=POLL_LIMIT_S):
    """Bounded poll: true as soon as predicate holds, false after `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def new_post(running, post_id, community, author="u1", **kw):
    bundle = running.svc.holder.current
    now = int(bundle.data_end_ts)  # the service runs on the data clock: "now" for the world
    resp = running.writer.WritePosts(
        wpb.WritePostsRequest(
            events=[
                wpb.PostEvent(
                    event_id=f"create-{post_id}",
                    op=wpb.POST_OP_CREATE,
                    post_id=post_id,
                    author_id=author,
                    community_id=community,
                    created_at=now,
                    **kw,
                )
            ]
        ),
        timeout=5,
    )
    assert resp.applied == 1


def test_a_new_post_reaches_a_member_within_a_second_and_a_deletion_at_once(running):
    bundle = running.svc.holder.current
    user, community = member_and_community(bundle)
    new_post(running, "fresh-1", community)
    # In-network: the community's recent list is updated by the same script as the record.
    assert "fresh-1" in feed(running, user, community_id=community)
    assert wait_for(lambda: "fresh-1" in feed(running, user))
    running.writer.WritePosts(
        wpb.WritePostsRequest(
            events=[wpb.PostEvent(event_id="delete-fresh-1", op=wpb.POST_OP_DELETE, post_id="fresh-1")]
        ),
        timeout=5,
    )
    assert "fresh-1" not in feed(running, user)
    assert "fresh-1" not in feed(running, user, community_id=community)


def test_out_of_network_fresh_posts_come_from_the_live_index(running):
    """A public post in a community the user is not in can only be found by vector."""
    bundle = running.svc.holder.current
    user = "u5"
    row = bundle.user_row[user]
    mine = set(bundle.communities_of(row).tolist())
    private = np.asarray(bundle[contract.COMMUNITY_PRIVATE_FILE])
    comm_vectors = np.asarray(bundle[contract.COMMUNITY_FACTORS_FILE])
    user_vec = np.asarray(bundle[contract.USER_FACTORS_FILE][row])
    # the public community outside the user's groups that the user is closest to
    others = [c for c in range(len(bundle.community_ids)) if c not in mine and not private[c]]
    target = max(others, key=lambda c: float(comm_vectors[c] @ user_vec))
    new_post(running, "fresh-oon", bundle.community_ids[target])
    live = running.svc.live
    assert wait_for(
        lambda: (ix := live.index_for(bundle.version)) is not None and vector_of(ix, "fresh-oon") is not None
    )
    assert "fresh-oon" in live.index_for(bundle.version).search(user_vec.astype(np.float32), 5)
    # With a limit above the candidate count, the feed is every retrieved post that passes
    # the filters: the fresh post is among them although the user is in none of its groups.
    assert "fresh-oon" in feed(running, user, limit=FULL)


def test_private_live_post_never_reaches_a_non_member(running):
    bundle = running.svc.holder.current
    members = np.asarray(bundle[contract.MEMBERSHIP_USER_FILE])
    comms = np.asarray(bundle[contract.MEMBERSHIP_COMMUNITY_FILE])
    user, community = member_and_community(bundle, public=True)
    c = bundle.community_row[community]
    outsider = next(bundle.user_ids[u] for u in range(len(bundle.user_ids)) if c not in comms[members == u])
    new_post(running, "fresh-members", community, visibility=wpb.VISIBILITY_MEMBERS)
    assert wait_for(lambda: "fresh-members" in feed(running, user))
    live = running.svc.live  # also in the live index, so out-of-network search could find it
    assert wait_for(
        lambda: (ix := live.index_for(bundle.version)) is not None and vector_of(ix, "fresh-members") is not None
    )
    for _ in range(3):
        assert "fresh-members" not in feed(running, outsider)
        assert "fresh-members" not in feed(running, outsider, candidate_post_ids=["fresh-members"])


def test_live_posts_survive_a_service_restart(tiny_bundle, redis_server):
    first = Running(tiny_bundle, redis_server.url)
    bundle = first.svc.holder.current
    user, community = member_and_community(bundle)
    new_post(first, "fresh-restart", community)
    first.stop()
    second = Running(tiny_bundle, redis_server.url)
    try:
        # the live index is replayed from Redis before the new server takes requests
        assert vector_of(second.svc.live.index_for(bundle.version), "fresh-restart") is not None
        assert "fresh-restart" in feed(second, user)
    finally:
        second.stop()


def test_degraded_mode_honours_live_deletions_and_visibility(running, redis_server):
    """Redis down: records come from the bundle, corrected by what the live index saw."""
    degraded_feed_honours_deletion_and_visibility(running, redis_server)


def test_degraded_mode_honours_them_in_a_live_index_without_vectors(tiny_bundle, tmp_path):
    """A version's first writes a deletion and a visibility change: the live index then
    holds no post vector (its len() is 0), and must still correct the bundle's records
    while Redis is down (a members-only post shown to a non-member otherwise)."""
    server = EmbeddedRedis(tmp_path / "redis", port=free_port()).start()
    try:
        publishing.publish(tiny_bundle, redis.Redis.from_url(server.url))
        r = Running(tiny_bundle, server.url)
        try:
            degraded_feed_honours_deletion_and_visibility(r, server, vectors=0)
        finally:
            r.stop()
    finally:
        server.stop()


def degraded_feed_honours_deletion_and_visibility(running, redis_server, vectors: int | None = None):
    """Delete one public post of u9's feed and make another members-only, then stop Redis:
    the degraded feed holds neither. `vectors`: the live index's post count to expect."""
    bundle = running.svc.holder.current
    user = "u9"
    public_posts = [p for p in feed(running, user) if p in bundle.post_row]
    assert len(public_posts) >= 2
    gone, hidden = public_posts[0], public_posts[1]
    running.writer.WritePosts(
        wpb.WritePostsRequest(
            events=[
                wpb.PostEvent(event_id=f"del-{gone}", op=wpb.POST_OP_DELETE, post_id=gone),
                wpb.PostEvent(
                    event_id=f"vis-{hidden}",
                    op=wpb.POST_OP_SET_VISIBILITY,
                    post_id=hidden,
                    visibility=wpb.VISIBILITY_MEMBERS,
                ),
            ]
        ),
        timeout=5,
    )
    live = running.svc.live
    assert wait_for(
        lambda: gone in live.index_for(bundle.version).deleted and hidden in live.index_for(bundle.version).private
    )
    if vectors is not None:
        assert len(live.index_for(bundle.version)) == vectors
    redis_server.stop()
    try:
        resp = running.ranker.Rank(ranking_pb2.RankRequest(user_id=user, limit=200), timeout=5)
        assert resp.degraded
        ids = [i.post_id for i in resp.items]
        assert ids and gone not in ids and hidden not in ids
    finally:
        redis_server.start()
