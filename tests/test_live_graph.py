"""The live community graph through the real service: joins, leaves, bans, roles, new
users, mutes, blocks and moderators' rules, written with CommunityGraph and seen by the
very next Rank (a real redis-server, real gRPC)."""

from __future__ import annotations

import shutil
import time

import grpc
import numpy as np
import pytest

from core import contract
from core.bundle import load_bundle
from nichefeed.v1 import graph_pb2 as gpb
from nichefeed.v1 import graph_pb2_grpc, ranking_pb2, ranking_pb2_grpc, writes_pb2, writes_pb2_grpc
from service.app import Service
from service.pipeline import RankContext, RankQuery
from tests.conftest import BACKENDS, OwnStore, service_config
from training import publish as publishing

_ids = iter(range(1_000_000))


def eid() -> str:
    return f"g{next(_ids)}"


@pytest.fixture(scope="module", params=BACKENDS)
def world(request, tiny_bundle, tmp_path_factory):
    """A private Redis (the graph writes change it; one test stops it), or the session's
    Redis Cluster, and the service."""
    store = OwnStore(request.param, request, tmp_path_factory, "redis-graph")
    server, client = store.server, store.client
    bundle = tmp_path_factory.mktemp("graph-models") / tiny_bundle.name  # a models dir of its own (one test publishes)
    shutil.copytree(tiny_bundle, bundle)
    publishing.publish(bundle, client)
    svc = Service(service_config(bundle, redis_timeout_ms=300), store.url).start(metrics=False)
    ch = grpc.insecure_channel(f"127.0.0.1:{svc.port}")
    b = load_bundle(bundle)
    yield World(server, client, svc, ch, b)
    ch.close()
    svc.stop(grace=1)
    store.stop()


class World:
    def __init__(self, server, client, svc, ch, bundle):
        self.server, self.client, self.svc, self.bundle = server, client, svc, bundle
        self.ranker = ranking_pb2_grpc.FeedRankerStub(ch)
        self.graph_stub = graph_pb2_grpc.CommunityGraphStub(ch)
        self.writer = writes_pb2_grpc.FeedWriterStub(ch)
        b = bundle
        self.members = {c: set() for c in range(len(b.community_ids))}
        self.roles = {}
        for u, c, r in zip(
            b[contract.MEMBERSHIP_USER_FILE].tolist(),
            b[contract.MEMBERSHIP_COMMUNITY_FILE].tolist(),
            b[contract.MEMBERSHIP_ROLE_FILE].tolist(),
        ):
            self.members[c].add(u)
            self.roles[(u, c)] = r

    def graph(self, *events: gpb.GraphEvent) -> writes_pb2.WriteResponse:
        return self.graph_stub.WriteGraph(gpb.WriteGraphRequest(events=list(events)), timeout=10)

    def rules(self, *events: gpb.RuleEvent) -> writes_pb2.WriteResponse:
        return self.graph_stub.WriteRules(gpb.WriteRulesRequest(events=list(events)), timeout=10)

    def rank(self, user: str, **kw) -> ranking_pb2.RankResponse:
        kw.setdefault("limit", 200)
        return self.ranker.Rank(ranking_pb2.RankRequest(user_id=user, **kw), timeout=10)

    def home_candidates(self, user: str) -> list[str]:
        """The candidates the service's own pipeline retrieves for a home feed (in process)."""
        ctx = RankContext(query=RankQuery(user_id=user, limit=50), bundle=self.svc.holder.current, now=time.time())
        for stage in self.svc.pipeline.stages:
            stage.run(ctx)
            if stage.name == "retrieve":
                return ctx.post_ids
        raise AssertionError("no retrieve stage")

    def community(self, name: str) -> int:
        return self.bundle.community_row[name]

    def posts_of(self, name: str) -> list[str]:
        b = self.bundle
        return [b.post_ids[r] for r in b.community_recent[self.community(name)].tolist()]

    def outsider(self, name: str, skip: int = 0) -> str:
        """A user of the model who is not a member of community `name`."""
        c = self.community(name)
        outsiders = [u for u in range(len(self.bundle.user_ids)) if u not in self.members[c]]
        return self.bundle.user_ids[outsiders[skip]]

    def member(self, name: str, role: int = contract.ROLE_MEMBER, skip: int = 0) -> str:
        c = self.community(name)
        users = sorted(u for u in self.members[c] if self.roles[(u, c)] == role)
        return self.bundle.user_ids[users[skip]]


def shown(resp) -> set[str]:
    return {i.post_id for i in resp.items}


def ev(op, user, community="", **kw) -> gpb.GraphEvent:
    return gpb.GraphEvent(event_id=eid(), op=op, user_id=user, community_id=community, **kw)


def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


PRIVATE = "c11"  # a private community of the tiny world with 23 members and moderators
PUBLIC = "c3"


def test_join_shows_a_private_group_and_leave_hides_it_at_once_even_without_redis(world):
    if world.server is None:
        pytest.skip("stops the one redis-server (the cluster's failover: tests/test_cluster_failover.py)")
    user = world.outsider(PRIVATE)
    posts = world.posts_of(PRIVATE)
    assert world.bundle[contract.COMMUNITY_PRIVATE_FILE][world.community(PRIVATE)]
    assert shown(world.rank(user, candidate_post_ids=posts)) == set()

    world.graph(ev(gpb.GRAPH_OP_JOIN, user, PRIVATE))
    joined = world.rank(user, candidate_post_ids=posts, explain=True)
    assert shown(joined) == set(posts)
    assert f"member of {PRIVATE}" in joined.items[0].reasons
    # The home feed reads the new group's lists (a second round trip, only for it): its
    # posts are among the candidates the scorer sees.
    assert set(world.home_candidates(user)) & set(posts)

    world.graph(ev(gpb.GRAPH_OP_LEAVE, user, PRIVATE))
    assert shown(world.rank(user, candidate_post_ids=posts)) == set()
    assert not shown(world.rank(user, limit=200)) & set(posts)
    world.server.stop()
    try:
        degraded = world.rank(user, candidate_post_ids=posts)
        assert degraded.degraded and shown(degraded) == set()
        code, details = status_of(lambda: world.graph(ev(gpb.GRAPH_OP_JOIN, user, PRIVATE)))
        assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        world.server.start()
    for _ in range(100):  # the breaker lets a probe through within its cool-down
        if not world.rank(user, limit=5).degraded:
            break
        time.sleep(0.02)
    assert shown(world.rank(user, candidate_post_ids=posts)) == set()


def test_a_member_who_leaves_loses_the_private_posts_the_bundle_gave_them(world):
    user = world.member(PRIVATE, skip=1)
    posts = world.posts_of(PRIVATE)
    assert shown(world.rank(user, candidate_post_ids=posts)) == set(posts)
    world.graph(ev(gpb.GRAPH_OP_LEAVE, user, PRIVATE))
    assert shown(world.rank(user, candidate_post_ids=posts)) == set()
    assert shown(world.rank(user, community_id=PRIVATE)) == set()


def test_ban_removes_and_refuses_a_rejoin_until_unbanned_all_or_nothing(world):
    user = world.member(PRIVATE, skip=2)
    posts = world.posts_of(PRIVATE)
    world.graph(ev(gpb.GRAPH_OP_BAN, user, PRIVATE))
    assert shown(world.rank(user, candidate_post_ids=posts)) == set()

    # A batch with a valid join and a refused one applies neither.
    code, details = status_of(
        lambda: world.graph(ev(gpb.GRAPH_OP_JOIN, user, PUBLIC), ev(gpb.GRAPH_OP_JOIN, user, PRIVATE))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.startswith("events[1].user_id:") and "banned" in details
    assert world.client.hget(contract.graph_key(user), contract.GRAPH_COMMUNITY + PUBLIC) is None

    world.graph(ev(gpb.GRAPH_OP_UNBAN, user, PRIVATE))
    assert shown(world.rank(user, candidate_post_ids=posts)) == set()  # unbanned is not a member
    world.graph(ev(gpb.GRAPH_OP_JOIN, user, PRIVATE))
    assert shown(world.rank(user, candidate_post_ids=posts)) == set(posts)


def test_role_changes_need_membership_and_show_in_reasons(world):
    outsider = world.outsider(PRIVATE, skip=3)
    code, details = status_of(
        lambda: world.graph(ev(gpb.GRAPH_OP_SET_ROLE, outsider, PRIVATE, role=gpb.ROLE_MODERATOR))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and details.startswith("events[0].user_id:")
    code, details = status_of(lambda: world.graph(ev(gpb.GRAPH_OP_SET_ROLE, outsider, PRIVATE)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("events[0].role:")

    member = world.member(PRIVATE, skip=3)
    world.graph(ev(gpb.GRAPH_OP_SET_ROLE, member, PRIVATE, role=gpb.ROLE_MODERATOR))
    resp = world.rank(member, community_id=PRIVATE, limit=3, explain=True)
    assert resp.items and f"moderator of {PRIVATE}" in resp.items[0].reasons


def test_a_user_created_a_second_ago_gets_a_feed_with_reasons(world):
    code, _ = status_of(lambda: world.rank("signup-1"))
    assert code == grpc.StatusCode.NOT_FOUND
    create = ev(gpb.GRAPH_OP_CREATE_USER, "signup-1", community_ids=[PRIVATE, PUBLIC])
    assert world.graph(create).applied == 1
    assert world.graph(create).duplicates == 1  # a retry is applied once

    resp = world.rank("signup-1", limit=30, explain=True)
    assert len(resp.items) == 30 and not resp.degraded
    communities = {i.community_id for i in resp.items}
    assert {PRIVATE, PUBLIC} <= communities  # in-network from both groups, the private one included
    assert all(i.reasons for i in resp.items)
    assert any(r == f"member of {PRIVATE}" for i in resp.items for r in i.reasons)
    assert communities - {PRIVATE, PUBLIC}  # and out-of-network posts near those groups
    private = set(np.flatnonzero(world.bundle[contract.COMMUNITY_PRIVATE_FILE]).tolist())
    assert all(world.community(i.community_id) not in private or i.community_id == PRIVATE for i in resp.items)

    again = gpb.GraphEvent(event_id=eid(), op=gpb.GRAPH_OP_CREATE_USER, user_id="signup-1")
    code, details = status_of(lambda: world.graph(again))
    assert code == grpc.StatusCode.ALREADY_EXISTS and details.startswith("events[0].user_id:")
    known = gpb.GraphEvent(event_id=eid(), op=gpb.GRAPH_OP_CREATE_USER, user_id=world.bundle.user_ids[0])
    assert status_of(lambda: world.graph(known))[0] == grpc.StatusCode.ALREADY_EXISTS


def test_a_user_with_no_groups_gets_public_posts_popular_now(world):
    world.graph(ev(gpb.GRAPH_OP_CREATE_USER, "signup-2"))
    resp = world.rank("signup-2", limit=20, explain=True)
    assert len(resp.items) == 20
    private = world.bundle[contract.COMMUNITY_PRIVATE_FILE]
    assert not any(private[world.community(i.community_id)] for i in resp.items)
    assert all(f"popular now in {i.community_id}" in i.reasons for i in resp.items)
    popular = {world.bundle.community_ids[c] for c in world.bundle.popular_communities}
    assert {i.community_id for i in resp.items} <= popular | {i.community_id for i in resp.items[5:]}


def test_mute_hides_a_community_and_unmute_brings_it_back(world):
    user = world.member(PUBLIC, skip=1)
    before = world.rank(user, limit=50)
    assert any(i.community_id == PUBLIC for i in before.items)
    world.graph(ev(gpb.GRAPH_OP_MUTE, user, PUBLIC))
    assert not any(i.community_id == PUBLIC for i in world.rank(user, limit=50).items)
    assert not shown(world.rank(user, candidate_post_ids=world.posts_of(PUBLIC)))
    world.graph(ev(gpb.GRAPH_OP_UNMUTE, user, PUBLIC))
    assert shown(world.rank(user, candidate_post_ids=world.posts_of(PUBLIC))) == set(world.posts_of(PUBLIC))


def test_block_hides_an_author_the_model_knows_and_one_it_does_not(world):
    user = world.member(PUBLIC, skip=2)
    posts = world.posts_of(PUBLIC)
    b = world.bundle
    author = b.user_ids[int(b[contract.POST_AUTHOR_FILE][b.post_row[posts[0]]])]
    by_author = {p for p in posts if b.user_ids[int(b[contract.POST_AUTHOR_FILE][b.post_row[p]])] == author}
    world.writer.WritePosts(
        writes_pb2.WritePostsRequest(
            events=[
                writes_pb2.PostEvent(
                    event_id=eid(),
                    op=writes_pb2.POST_OP_CREATE,
                    post_id="live-by-newcomer",
                    author_id="newcomer",
                    community_id=PUBLIC,
                )
            ]
        ),
        timeout=10,
    )
    candidates = posts + ["live-by-newcomer"]
    # The author of a post by a user the model has not seen is known from the live index,
    # which follows the live stream (every live_poll_s): wait for it, bounded.
    for _ in range(100):
        resp = world.rank(user, candidate_post_ids=candidates)
        if any(i.author_id == "newcomer" for i in resp.items):
            break
        time.sleep(0.02)
    assert "live-by-newcomer" in shown(resp)
    assert {i.author_id for i in resp.items if i.post_id == "live-by-newcomer"} == {"newcomer"}

    world.graph(
        ev(gpb.GRAPH_OP_BLOCK, user, target_user_id=author), ev(gpb.GRAPH_OP_BLOCK, user, target_user_id="newcomer")
    )
    assert shown(world.rank(user, candidate_post_ids=candidates)) == set(candidates) - by_author - {"live-by-newcomer"}
    world.graph(ev(gpb.GRAPH_OP_UNBLOCK, user, target_user_id="newcomer"))
    assert "live-by-newcomer" in shown(world.rank(user, candidate_post_ids=candidates))
    code, details = status_of(lambda: world.graph(ev(gpb.GRAPH_OP_BLOCK, user, target_user_id=user)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("events[0].target_user_id:")


def rule(op, moderator, community, **kw) -> gpb.RuleEvent:
    return gpb.RuleEvent(event_id=eid(), op=op, moderator_id=moderator, community_id=community, **kw)


def test_only_a_moderator_pins_and_the_pin_tops_members_feeds(world):
    oldest = world.posts_of(PRIVATE)[-1]  # older than the feed's age limit: only a pin shows it
    until = int(time.time()) + 3600
    member = world.member(PRIVATE, skip=4)
    code, details = status_of(lambda: world.rules(rule(gpb.RULE_OP_PIN, member, PRIVATE, post_id=oldest, until=until)))
    assert code == grpc.StatusCode.PERMISSION_DENIED and details.startswith("events[0].moderator_id:")

    moderator = world.member(PRIVATE, role=contract.ROLE_MODERATOR)
    assert world.rules(rule(gpb.RULE_OP_PIN, moderator, PRIVATE, post_id=oldest, until=until)).applied == 1
    top = world.rank(member, limit=10, explain=True).items[0]
    assert top.post_id == oldest and f"pinned by the moderators of {PRIVATE}" in top.reasons
    assert oldest not in shown(world.rank(world.outsider(PRIVATE, skip=5), candidate_post_ids=[oldest]))

    world.graph(ev(gpb.GRAPH_OP_SET_ROLE, moderator, PRIVATE, role=gpb.ROLE_MEMBER))  # demoted live
    code, _ = status_of(lambda: world.rules(rule(gpb.RULE_OP_UNPIN, moderator, PRIVATE, post_id=oldest)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    world.graph(ev(gpb.GRAPH_OP_SET_ROLE, moderator, PRIVATE, role=gpb.ROLE_MODERATOR))
    world.rules(rule(gpb.RULE_OP_UNPIN, moderator, PRIVATE, post_id=oldest))
    assert world.rank(member, limit=10).items[0].post_id != oldest


def test_a_moderator_takes_a_post_out_of_every_feed_and_back(world):
    moderator = world.member(PRIVATE, role=contract.ROLE_MODERATOR, skip=1)
    posts = world.posts_of(PRIVATE)
    reader = world.member(PRIVATE, skip=5)
    world.rules(rule(gpb.RULE_OP_REMOVE_POST, moderator, PRIVATE, post_id=posts[0]))
    assert shown(world.rank(reader, candidate_post_ids=posts)) == set(posts) - {posts[0]}
    assert world.client.hexists(contract.REMOVED_KEY, posts[0])
    world.rules(rule(gpb.RULE_OP_RESTORE_POST, moderator, PRIVATE, post_id=posts[0]))
    assert shown(world.rank(reader, candidate_post_ids=posts)) == set(posts)
    other = world.posts_of(PUBLIC)[0]
    code, details = status_of(lambda: world.rules(rule(gpb.RULE_OP_REMOVE_POST, moderator, PRIVATE, post_id=other)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("events[0].post_id:")


def test_a_non_member_cap_limits_a_community_in_non_members_feeds_only(world):
    b = world.bundle
    community = b.community_ids[b.popular_communities[0]]
    moderators = [
        u for u in world.members[world.community(community)] if world.roles[(u, world.community(community))] == 3
    ]
    moderator = b.user_ids[moderators[0]] if moderators else None
    if moderator is None:  # make one live: the check reads the live role
        moderator = world.member(community)
        world.graph(ev(gpb.GRAPH_OP_SET_ROLE, moderator, community, role=gpb.ROLE_MODERATOR))
    posts = world.posts_of(community)[:40]
    outsider = world.outsider(community, skip=7)
    assert len([i for i in world.rank(outsider, candidate_post_ids=posts, limit=20).items]) == 20
    world.rules(rule(gpb.RULE_OP_CAP_NON_MEMBER_SHARE, moderator, community, max_share=0.1))
    capped = world.rank(outsider, candidate_post_ids=posts, limit=20)
    assert len(capped.items) == 2  # 10% of 20; the rest of the community is not served to them
    member = world.member(community, skip=1)
    assert len(world.rank(member, candidate_post_ids=posts, limit=20).items) == 20
    world.rules(rule(gpb.RULE_OP_CAP_NON_MEMBER_SHARE, moderator, community, max_share=1.0))
    assert len(world.rank(outsider, candidate_post_ids=posts, limit=20).items) == 20


def test_an_event_id_reused_for_a_different_event_is_refused(world):
    user = world.outsider(PUBLIC, skip=9)
    first = ev(gpb.GRAPH_OP_MUTE, user, PUBLIC)
    world.graph(first)
    reused = gpb.GraphEvent(event_id=first.event_id, op=gpb.GRAPH_OP_UNMUTE, user_id=user, community_id=PUBLIC)
    code, details = status_of(lambda: world.graph(reused))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("events[0].event_id:")
    assert world.client.hexists(contract.graph_key(user), contract.GRAPH_MUTED + PUBLIC)


@pytest.mark.parametrize(
    ("event", "where"),
    [
        (
            gpb.GraphEvent(event_id="x", op=gpb.GRAPH_OP_JOIN, user_id="u1", community_id="nope"),
            "events[0].community_id",
        ),
        (gpb.GraphEvent(event_id="x", op=gpb.GRAPH_OP_JOIN, user_id="", community_id=PUBLIC), "events[0].user_id"),
        (gpb.GraphEvent(event_id="", op=gpb.GRAPH_OP_LEAVE, user_id="u1", community_id=PUBLIC), "events[0].event_id"),
        (gpb.GraphEvent(event_id="x", user_id="u1", community_id=PUBLIC), "events[0].op"),
        (gpb.GraphEvent(event_id="x", op=gpb.GRAPH_OP_BLOCK, user_id="u1"), "events[0].target_user_id"),
        (
            gpb.GraphEvent(event_id="x", op=gpb.GRAPH_OP_CREATE_USER, user_id="n", community_ids=[PUBLIC, PUBLIC]),
            "events[0].community_ids",
        ),
        (gpb.GraphEvent(event_id="x", op=gpb.GRAPH_OP_MUTE, user_id="u1", community_id=PUBLIC, ts=-5), "events[0].ts"),
    ],
)
def test_bad_graph_events_name_their_field(world, event, where):
    code, details = status_of(lambda: world.graph(event))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(where + ":"), details


def test_too_many_events_are_refused_whole(world):
    events = [ev(gpb.GRAPH_OP_MUTE, "u1", PUBLIC) for _ in range(1001)]
    assert status_of(lambda: world.graph(*events))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not world.client.hexists(contract.graph_key("u1"), contract.GRAPH_MUTED + PUBLIC)


def test_a_publish_keeps_live_leaves_and_removals(world, learned_bundle):
    """A newer model trained on data cut before the leave must not bring the group back."""
    user = world.member(PRIVATE, skip=6)
    posts = world.posts_of(PRIVATE)
    moderator = world.member(PRIVATE, role=contract.ROLE_MODERATOR, skip=2)
    world.graph(ev(gpb.GRAPH_OP_LEAVE, user, PRIVATE))
    world.rules(rule(gpb.RULE_OP_REMOVE_POST, moderator, PRIVATE, post_id=posts[1]))
    reader = world.member(PRIVATE, skip=7)
    newer = world.svc.cfg.models_dir / learned_bundle.name  # where the service loads bundles from
    shutil.copytree(learned_bundle, newer)
    publishing.publish(newer, world.client, force=True, progress=False)
    new = load_bundle(newer)
    for _ in range(200):
        world.svc.reloader.check_once()
        if world.svc.holder.current.version == new.version:
            break
        time.sleep(0.02)
    assert world.svc.holder.current.version == new.version
    new_posts = [new.post_ids[r] for r in new.community_recent[new.community_row[PRIVATE]].tolist()]
    assert shown(world.rank(user, candidate_post_ids=new_posts)) == set()
    seen_by_reader = shown(world.rank(reader, candidate_post_ids=new_posts))
    assert posts[1] not in seen_by_reader and seen_by_reader == set(new_posts) - {posts[1]}


def test_fold_log_folds_graph_events_into_memberships(world, tiny_data, tmp_path):
    """The loop closes: the next training learns the live graph (make fold-log)."""
    from training.live_log import fold_log
    from training.load import load_dataset

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    joiner, leaver, banned = world.outsider(PUBLIC, skip=11), world.member(PUBLIC, skip=4), world.member(PUBLIC, skip=5)
    world.graph(
        ev(gpb.GRAPH_OP_JOIN, joiner, PUBLIC, role=gpb.ROLE_TRUSTED),
        ev(gpb.GRAPH_OP_LEAVE, leaver, PUBLIC),
        ev(gpb.GRAPH_OP_BAN, banned, PUBLIC),
        ev(gpb.GRAPH_OP_CREATE_USER, "signup-fold", community_ids=[PUBLIC, PRIVATE]),
        ev(gpb.GRAPH_OP_MUTE, joiner, PRIVATE),
    )
    folded = fold_log(world.client, data)
    assert folded.memberships >= 4 and folded.not_folded >= 1  # the mute stays live only

    ds = load_dataset(data)
    users, communities = list(ds.user_ids), list(ds.community_ids)
    have = {
        (users[u], communities[c]): int(r) for u, c, r in zip(ds.m_user.tolist(), ds.m_community.tolist(), ds.m_role)
    }
    assert have[(joiner, PUBLIC)] == contract.ROLE_TRUSTED
    assert (leaver, PUBLIC) not in have and (banned, PUBLIC) not in have
    assert have[("signup-fold", PUBLIC)] == have[("signup-fold", PRIVATE)] == contract.ROLE_MEMBER
    assert not fold_log(world.client, data).anything  # nothing folds twice


def test_the_newer_of_live_entry_and_bundle_snapshot_wins_per_community():
    from core import live_graph

    end = 1_000
    rows = {"a": 0, "b": 1, "c": 2, "d": 3}
    graph = live_graph.parse(
        {
            b"c:a": b"0:1001",  # left after the data end: the bundle's membership ends
            b"c:b": b"0:999",  # left before it: training saw what followed (bundle stands)
            b"c:c": b"3:1500",  # joined as moderator live
            b"c:d": b"9:10",  # banned before the data end: the trained membership (rejoined since) stands
            b"m:a": b"1200",
            b"created": b"1100",
            b"c:zz": b"1:1100",  # a community the model does not know
        }
    )
    assert graph.muted == {"a"} and graph.created and graph.banned("d")
    roles = live_graph.effective_roles({0: 1, 1: 2, 3: 1}, graph, rows, end)
    assert roles == {1: 2, 2: 3, 3: 1}
    with pytest.raises(contract.ContractError):
        live_graph.parse({b"c:a": b"member"})
    weights = live_graph.adjusted_weights({0: 2.5, 1: 1.0}, before={0, 1}, after={1, 2})
    assert weights == {0: 1.5, 1: 1.0, 2: 1.0}
