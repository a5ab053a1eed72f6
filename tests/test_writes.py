"""The write path against a real redis-server and a real gRPC server, and the same suite
against a real Redis Cluster (3 masters, 3 replicas): every test runs on both, except
the two that stop or crash the one server (the cluster's failover has its own test)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import redis

from core import contract, hotness
from core.redis_conn import connect
from core.retrieval import HOT_LIST_KEEP
from core.scoring import NON_MEMBER_STANDING, ROLE_STANDING
from nichefeed.v1 import writes_pb2 as wpb
from nichefeed.v1 import writes_pb2_grpc
from service.api.writes import FeedWriterServicer
from service.app import Service
from service.live_index import LiveIndexFollower
from service.writes import WriteApplier
from tests.conftest import BACKENDS, OwnStore, service_config
from tests.live_helpers import vector_of
from training import publish as publishing


@pytest.fixture(scope="module", params=BACKENDS)
def world(request, tiny_bundle, tmp_path_factory):
    """A private Redis (writes mutate it) with the tiny bundle published, and the service."""
    store = OwnStore(request.param, request, tmp_path_factory, "redis-writes")
    client = store.client
    publishing.publish(tiny_bundle, client)
    svc = Service(service_config(tiny_bundle), store.url)
    applier = WriteApplier(svc.holder, connect(store.url, socket_timeout=2))
    writes_pb2_grpc.add_FeedWriterServicer_to_server(FeedWriterServicer(applier), svc.server)
    svc.start(metrics=False)
    ch = grpc.insecure_channel(f"127.0.0.1:{svc.port}")
    yield {
        "server": store.server,
        "kind": store.kind,
        "client": client,
        "svc": svc,
        "writer": writes_pb2_grpc.FeedWriterStub(ch),
    }
    ch.close()
    svc.stop(grace=1)
    store.stop()


def single_node_only(world) -> None:
    if world["kind"] != "single":
        pytest.skip("stops the one redis-server (the cluster's failover: tests/test_cluster_failover.py)")


def post_record(client, svc, post_id):
    raw = client.get(contract.post_key(svc.holder.current.version, post_id))
    return None if raw is None else contract.decode_posts([raw])[0]


def create(event_id, post_id, community="c1", author="u3", **kw):
    return wpb.PostEvent(
        event_id=event_id, op=wpb.POST_OP_CREATE, post_id=post_id, author_id=author, community_id=community, **kw
    )


def test_created_post_is_stored_and_followed_by_the_live_index(world):
    client, svc, writer = world["client"], world["svc"], world["writer"]
    resp = writer.WritePosts(
        wpb.WritePostsRequest(events=[create("e-create-1", "live-1", created_at=1_700_000_000)]), timeout=5
    )
    assert (resp.applied, resp.duplicates) == (1, 0)
    rec = post_record(client, svc, "live-1")
    bundle = svc.holder.current
    assert rec["row"] == -1
    assert rec["community"] == bundle.community_row["c1"]
    assert rec["created_at"] == 1_700_000_000
    assert rec["flags"] & contract.FLAG_PRESENT
    assert bool(rec["flags"] & contract.FLAG_PRIVATE) == bool(
        bundle[contract.COMMUNITY_PRIVATE_FILE][bundle.community_row["c1"]]
    )
    # the author's standing: training's role prior for their role in c1 (none: the non-member prior)
    members = np.asarray(bundle[contract.MEMBERSHIP_USER_FILE]) == bundle.user_row["u3"]
    in_c1 = np.asarray(bundle[contract.MEMBERSHIP_COMMUNITY_FILE])[members] == bundle.community_row["c1"]
    role = int(np.asarray(bundle[contract.MEMBERSHIP_ROLE_FILE])[members][in_c1][0]) if in_c1.any() else 0
    assert rec["author_trust"] == pytest.approx(ROLE_STANDING[role] if role else NON_MEMBER_STANDING)
    follower = LiveIndexFollower(svc.holder, client)
    follower.poll_once()
    live = follower.index_for(bundle.version)
    # A new post starts at the training rule's prior (community and author).
    start = bundle.new_post_vectors(np.array([bundle.community_row["c1"]]), np.array([bundle.user_row["u3"]]))[0]
    np.testing.assert_allclose(vector_of(live, "live-1"), start, rtol=1e-6)
    assert "live-1" in live.search(start, 5)


def test_replayed_engagement_batch_changes_counters_once(world):
    client, svc, writer = world["client"], world["svc"], world["writer"]
    post = svc.holder.current.post_ids[10]
    before = post_record(client, svc, post)
    batch = wpb.WriteEngagementsRequest(
        events=[
            wpb.EngagementEvent(event_id="eng-a", user_id="u1", post_id=post, kind=wpb.LIKE, ts=1_700_000_100),
            wpb.EngagementEvent(event_id="eng-b", user_id="u2", post_id=post, kind=wpb.REPORT, ts=1_700_000_200),
            wpb.EngagementEvent(event_id="eng-c", user_id="u2", post_id=post, kind=wpb.VIEW),
        ]
    )
    first = writer.WriteEngagements(batch, timeout=5)
    again = writer.WriteEngagements(batch, timeout=5)
    assert (first.applied, first.duplicates) == (3, 0)
    assert (again.applied, again.duplicates) == (0, 3)
    after = post_record(client, svc, post)
    assert after["positives"] == pytest.approx(before["positives"] + 1.0)  # like weighs 1
    assert after["negatives"] == pytest.approx(before["negatives"] + 1.0)
    assert after["views"] == pytest.approx(before["views"] + 3.0)
    # every accepted event is in the log once, for the next training run
    log = [
        contract.decode_log(f[b"engagement"], contract.LOG_ENGAGEMENT_FIELDS)
        for _, f in client.xrange(contract.EVENT_LOG_KEY)
        if b"engagement" in f
    ]
    assert sum(1 for e in log if e["event_id"] == "eng-a") == 1


def test_like_moves_the_post_vector_toward_the_engager(world):
    client, svc, writer = world["client"], world["svc"], world["writer"]
    bundle = svc.holder.current
    writer.WritePosts(wpb.WritePostsRequest(events=[create("e-create-2", "live-2", community="c2")]), timeout=5)
    user = np.asarray(bundle[contract.USER_FACTORS_FILE][bundle.user_row["u7"]])
    follower = LiveIndexFollower(svc.holder, client)
    follower.poll_once()
    before = vector_of(follower.index_for(bundle.version), "live-2").copy()
    writer.WriteEngagements(
        wpb.WriteEngagementsRequest(
            events=[
                wpb.EngagementEvent(event_id=f"mv-{i}", user_id="u7", post_id="live-2", kind=wpb.SHARE)
                for i in range(5)
            ]
        ),
        timeout=5,
    )
    follower.poll_once()
    after = vector_of(follower.index_for(bundle.version), "live-2")
    assert float(after @ user) > float(before @ user)


def test_delete_and_visibility(world):
    client, svc, writer = world["client"], world["svc"], world["writer"]
    public = next(
        c
        for c, p in zip(svc.holder.current.community_ids, svc.holder.current[contract.COMMUNITY_PRIVATE_FILE])
        if not p
    )
    writer.WritePosts(wpb.WritePostsRequest(events=[create("e-create-3", "live-3", community=public)]), timeout=5)
    assert not post_record(client, svc, "live-3")["flags"] & contract.FLAG_PRIVATE
    writer.WritePosts(
        wpb.WritePostsRequest(
            events=[
                wpb.PostEvent(
                    event_id="e-vis-3",
                    op=wpb.POST_OP_SET_VISIBILITY,
                    post_id="live-3",
                    visibility=wpb.VISIBILITY_MEMBERS,
                )
            ]
        ),
        timeout=5,
    )
    assert post_record(client, svc, "live-3")["flags"] & contract.FLAG_PRIVATE
    writer.WritePosts(
        wpb.WritePostsRequest(events=[wpb.PostEvent(event_id="e-del-3", op=wpb.POST_OP_DELETE, post_id="live-3")]),
        timeout=5,
    )
    assert post_record(client, svc, "live-3")["flags"] & contract.FLAG_DELETED
    follower = LiveIndexFollower(svc.holder, client)
    follower.poll_once()
    assert "live-3" not in follower.index_for(svc.holder.current.version).search(
        np.ones(svc.holder.current.index.d, np.float32), 1000
    )


@pytest.mark.parametrize(
    "events, field",
    [
        (
            [wpb.PostEvent(event_id="", op=wpb.POST_OP_CREATE, post_id="x", author_id="u1", community_id="c1")],
            "events[0].event_id",
        ),
        (
            [create("ok-1", "bad-1"), wpb.PostEvent(event_id="b2", op=wpb.POST_OP_UNSPECIFIED, post_id="x")],
            "events[1].op",
        ),
        ([create("ok-2", "bad-2", community="no-such")], "events[0].community_id"),
        ([create("ok-3", "bad-3", created_at=-5)], "events[0].created_at"),
        ([wpb.PostEvent(event_id="d1", op=wpb.POST_OP_DELETE, post_id="never-existed")], "events[0].post_id"),
    ],
)
def test_a_bad_post_event_rejects_the_whole_batch(world, events, field):
    with pytest.raises(grpc.RpcError) as err:
        world["writer"].WritePosts(wpb.WritePostsRequest(events=events), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field + ":")
    for e in events:  # nothing of the batch was applied
        assert world["client"].get(contract.applied_key(e.event_id)) is None


def test_bad_engagement_names_index_and_field(world):
    post = world["svc"].holder.current.post_ids[0]
    events = [
        wpb.EngagementEvent(event_id="x1", user_id="u1", post_id=post, kind=wpb.LIKE),
        wpb.EngagementEvent(event_id="x2", user_id="u1", post_id=post),
    ]
    with pytest.raises(grpc.RpcError) as err:
        world["writer"].WriteEngagements(wpb.WriteEngagementsRequest(events=events), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("events[1].kind:")
    assert world["client"].get(contract.applied_key("x1")) is None


def test_oversized_batch_is_resource_exhausted(world):
    events = [wpb.EngagementEvent(event_id=f"big-{i}", user_id="u1", post_id="p1", kind=wpb.VIEW) for i in range(1001)]
    with pytest.raises(grpc.RpcError) as err:
        world["writer"].WriteEngagements(wpb.WriteEngagementsRequest(events=events), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_stream_applies_in_batches(world):
    post = world["svc"].holder.current.post_ids[20]
    before = post_record(world["client"], world["svc"], post)["views"]
    events = (
        wpb.EngagementEvent(event_id=f"s-{i}", user_id=f"u{i % 50}", post_id=post, kind=wpb.VIEW) for i in range(1200)
    )
    resp = world["writer"].StreamEngagements(events, timeout=30)
    assert (resp.applied, resp.duplicates) == (1200, 0)
    assert post_record(world["client"], world["svc"], post)["views"] == pytest.approx(before + 1200)


def test_acknowledged_write_survives_a_redis_restart(world):
    single_node_only(world)
    server, writer, svc = world["server"], world["writer"], world["svc"]
    writer.WritePosts(wpb.WritePostsRequest(events=[create("e-durable", "live-durable")]), timeout=5)
    server.kill()  # as a crash: no shutdown save, only the append-only file
    server.start()
    client = redis.Redis.from_url(server.url)
    assert post_record(client, svc, "live-durable") is not None
    assert client.get(contract.applied_key("e-durable")) is not None


def test_writes_answer_unavailable_when_redis_is_down(world):
    single_node_only(world)
    server, writer = world["server"], world["writer"]
    server.stop()
    try:
        with pytest.raises(grpc.RpcError) as err:
            writer.WritePosts(wpb.WritePostsRequest(events=[create("e-down", "live-down")]), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.start()


def test_fold_log_feeds_the_next_training_run(world, tiny_data, tmp_path):
    import shutil

    from training.live_log import fold_log
    from training.load import load_dataset

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    client, writer = world["client"], world["writer"]
    writer.WritePosts(
        wpb.WritePostsRequest(
            events=[create("e-fold-1", "live-fold", community="c3", author="u9", created_at=1_700_000_500)]
        ),
        timeout=5,
    )
    writer.WriteEngagements(
        wpb.WriteEngagementsRequest(
            events=[
                wpb.EngagementEvent(
                    event_id="e-fold-2", user_id="u4", post_id="live-fold", kind=wpb.COMMENT, ts=1_700_000_600
                )
            ]
        ),
        timeout=5,
    )
    folded = fold_log(client, data)
    assert folded.posts >= 1 and folded.engagements >= 1
    ds = load_dataset(data)
    i = list(ds.post_ids).index("live-fold")
    assert ds.community_ids[ds.post_community[i]] == "c3"
    assert ds.user_ids[ds.post_author[i]] == "u9"
    assert ds.post_created_at[i] == 1_700_000_500
    hits = [(ds.user_ids[u], k) for u, p, k, t in zip(ds.e_user, ds.e_post, ds.e_kind, ds.e_ts) if p == i]
    assert ("u4", contract.KINDS.index("comment")) in hits
    assert not ds.post_members_only[i]
    # folding again folds nothing: the position moved and the entries were trimmed
    assert not fold_log(client, data).anything


def test_new_post_heads_its_community_recent_list_and_engagement_marks_seen(world):
    client, svc, writer = world["client"], world["svc"], world["writer"]
    version = svc.holder.current.version
    before = contract.decode_recent(client.get(contract.recent_key(version, "c5")))
    writer.WritePosts(wpb.WritePostsRequest(events=[create("e-recent", "live-recent", community="c5")]), timeout=5)
    after = contract.decode_recent(client.get(contract.recent_key(version, "c5")))
    assert after[0] == "live-recent"
    assert after[1:] == before[: contract.RECENT_PER_COMMUNITY - 1]
    writer.WriteEngagements(
        wpb.WriteEngagementsRequest(
            events=[
                wpb.EngagementEvent(
                    event_id="e-seen", user_id="u11", post_id="live-recent", kind=wpb.VIEW, ts=1_700_000_900
                )
            ]
        ),
        timeout=5,
    )
    assert client.zscore(contract.seen_key("u11"), "live-recent") == 1_700_000_900


def test_members_only_visibility_survives_fold_and_retrain(world, tiny_data, tmp_path):
    """A post made members-only live stays private in the next model: fold-log writes the
    visibility column, training keeps it, and the published record is private."""
    import shutil

    from core.bundle import load_bundle
    from training.live_log import fold_log
    from training.load import load_dataset
    from training.params import TrainParams
    from training.train import train

    client, svc, writer = world["client"], world["svc"], world["writer"]
    bundle = svc.holder.current
    private = bundle[contract.COMMUNITY_PRIVATE_FILE]
    post = next(p for r, p in enumerate(bundle.post_ids) if not private[bundle[contract.POST_COMMUNITY_FILE][r]])
    writer.WritePosts(
        wpb.WritePostsRequest(
            events=[
                wpb.PostEvent(
                    event_id="vis-retrain",
                    op=wpb.POST_OP_SET_VISIBILITY,
                    post_id=post,
                    visibility=wpb.VISIBILITY_MEMBERS,
                )
            ]
        ),
        timeout=5,
    )
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    fold_log(client, data)
    ds = load_dataset(data)
    assert ds.post_members_only[list(ds.post_ids).index(post)]
    retrained = load_bundle(
        train(data, tmp_path / "models", TrainParams(scorer="affinity"), progress=False, quiet=True)
    )
    record = retrained.records_at(np.array([retrained.post_row[post]]))
    assert record["flags"][0] & contract.FLAG_PRIVATE


def test_batch_stream_applies_each_message_and_names_the_bad_event(world):
    post = world["svc"].holder.current.post_ids[30]
    before = post_record(world["client"], world["svc"], post)["views"]

    def batch(start, n, **overrides):
        return wpb.WriteEngagementsRequest(
            events=[
                wpb.EngagementEvent(
                    event_id=f"bs-{start + i}", user_id=f"u{i % 40}", post_id=post, kind=overrides.get("kind", wpb.VIEW)
                )
                for i in range(n)
            ]
        )

    resp = world["writer"].StreamEngagementBatches(iter([batch(0, 700), batch(700, 300)]), timeout=30)
    assert (resp.applied, resp.duplicates) == (1000, 0)
    assert post_record(world["client"], world["svc"], post)["views"] == pytest.approx(before + 1000)
    bad = batch(2000, 10)
    bad.events[4].kind = wpb.ENGAGEMENT_KIND_UNSPECIFIED
    with pytest.raises(grpc.RpcError) as err:
        world["writer"].StreamEngagementBatches(iter([batch(1000, 5), bad]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("events[9].kind:")  # index across the whole stream
    assert "5 events applied before this batch" in err.value.details()
    assert world["client"].get(contract.applied_key("bs-2000")) is None  # the bad batch: nothing
    assert world["client"].get(contract.applied_key("bs-1004")) is not None  # the batch before it: all


def test_a_new_post_starts_from_community_and_author_like_training(world):
    """The write path places a post by the prior training uses: the community's vector
    blended with the author's KnownFor vector (core.post_vectors.post_prior)."""
    from core import post_vectors

    client, svc, writer = world["client"], world["svc"], world["writer"]
    bundle = svc.holder.current
    authors = np.asarray(bundle[contract.AUTHOR_VECTORS_FILE])
    author = next(u for u in range(len(bundle.user_ids)) if authors[u].any())
    c = bundle.community_row["c4"]
    writer.WritePosts(
        wpb.WritePostsRequest(
            events=[create("e-author", "live-author", community="c4", author=bundle.user_ids[author])]
        ),
        timeout=5,
    )
    follower = LiveIndexFollower(svc.holder, client)
    follower.poll_once()
    expected = post_vectors.post_prior(
        np.asarray(bundle[contract.COMMUNITY_FACTORS_FILE])[[c]], authors[[author]], np.array([True])
    )[0]
    np.testing.assert_allclose(vector_of(follower.index_for(bundle.version), "live-author"), expected, rtol=1e-6)
    assert not np.allclose(expected, bundle[contract.COMMUNITY_FACTORS_FILE][c])  # the author part counts


def test_live_stream_compaction_keeps_what_a_replay_rebuilds(world):
    """Many moves of one post grow the stream; compaction rewrites it as one entry per
    post (plus markers), and a process replaying it from scratch rebuilds the same index."""
    client, svc, writer = world["client"], world["svc"], world["writer"]
    bundle = svc.holder.current
    key = contract.live_stream_key(bundle.version)
    writer.WritePosts(wpb.WritePostsRequest(events=[create("e-compact", "live-compact", community="c6")]), timeout=5)
    for round_ in range(12):  # every batch re-publishes the moved vector: 12 entries for one post
        writer.WriteEngagements(
            wpb.WriteEngagementsRequest(
                events=[
                    wpb.EngagementEvent(event_id=f"cmp-{round_}", user_id="u8", post_id="live-compact", kind=wpb.LIKE)
                ]
            ),
            timeout=5,
        )
    follower = LiveIndexFollower(svc.holder, client)
    follower.poll_once()
    before = follower.index_for(bundle.version)
    grown = client.xlen(key)
    assert follower.compact(min_entries=0)
    compacted = client.xlen(key)
    assert compacted == len(before.snapshot()) < grown
    fresh = LiveIndexFollower(svc.holder, client)
    fresh.poll_once()
    after = fresh.index_for(bundle.version)
    # deleted bundle posts keep their marker; a deleted live post simply vanishes
    assert after.deleted == {p for p in before.deleted if p in bundle.post_row}
    assert after.private == before.private
    assert len(after) == len(before)
    np.testing.assert_allclose(vector_of(after, "live-compact"), vector_of(before, "live-compact"))
    # the old follower goes on from where it was: the rewritten entries re-state its state
    follower.poll_once()
    np.testing.assert_allclose(
        vector_of(follower.index_for(bundle.version), "live-compact"), vector_of(before, "live-compact")
    )
    # a snapshot older than the stream's tail is refused (a newer write could be undone)
    writer.WritePosts(
        wpb.WritePostsRequest(events=[create("e-compact-2", "live-compact-2", community="c6")]), timeout=5
    )
    assert not fresh.compact(min_entries=0)


def test_engagement_heats_the_post_and_its_community_hot_list_by_the_training_rule(world):
    """The record's (hot, hot_at) follow core.hotness.add, the community's hot list moves
    by core.hotness.list_score: the service ranks live posts by what training computed."""
    client, svc, writer = world["client"], world["svc"], world["writer"]
    bundle = svc.holder.current
    half_life = bundle.hot_half_life_s
    post = bundle.post_ids[20]
    community = bundle.community_ids[int(bundle[contract.POST_COMMUNITY_FILE][20])]
    key = contract.hot_key(bundle.version, community)
    before = post_record(client, svc, post)
    score_before = client.zscore(key, post) or 0.0
    t0 = int(bundle.data_end_ts) + 7200
    events = [
        wpb.EngagementEvent(event_id="hot-1", user_id="u1", post_id=post, kind=wpb.COMMENT, ts=t0),  # weight 2
        wpb.EngagementEvent(event_id="hot-2", user_id="u2", post_id=post, kind=wpb.LIKE, ts=t0 + 3600),  # weight 1
        wpb.EngagementEvent(
            event_id="hot-3", user_id="u4", post_id=post, kind=wpb.LIKE, ts=t0 - 600
        ),  # late: decayed in
        wpb.EngagementEvent(event_id="hot-4", user_id="u4", post_id=post, kind=wpb.VIEW, ts=t0 + 4000),  # no heat
    ]
    assert writer.WriteEngagements(wpb.WriteEngagementsRequest(events=events), timeout=5).applied == 4
    value, at = float(before["hot"]), float(before["hot_at"])
    for weight, ts in ((2.0, t0), (1.0, t0 + 3600), (1.0, t0 - 600)):
        value, at = hotness.add(value, at, weight, ts, half_life)
    after = post_record(client, svc, post)
    assert after["hot_at"] == at == t0 + 3600
    assert after["hot"] == pytest.approx(value, rel=1e-5)
    gained = hotness.list_score(
        np.array([2.0, 1.0, 1.0]), np.array([t0, t0 + 3600, t0 - 600]), bundle.data_end_ts, half_life
    ).sum()
    assert client.zscore(key, post) == pytest.approx(score_before + gained, rel=1e-9)
    assert client.zcard(key) <= HOT_LIST_KEEP


def test_an_event_id_reused_for_a_different_event_is_refused_and_a_true_retry_is_a_duplicate(world):
    writer, client = world["writer"], world["client"]
    like = wpb.EngagementEvent(event_id="e-reuse-1", user_id="u7", post_id="p10", kind=wpb.LIKE)  # ts 0: now
    assert writer.WriteEngagements(wpb.WriteEngagementsRequest(events=[like]), timeout=5).applied == 1
    retry = writer.WriteEngagements(wpb.WriteEngagementsRequest(events=[like]), timeout=5)
    assert (retry.applied, retry.duplicates) == (0, 1)  # the same event later: ts 0 still matches

    fresh = wpb.EngagementEvent(event_id="e-reuse-2", user_id="u7", post_id="p11", kind=wpb.LIKE)
    other = wpb.EngagementEvent(event_id="e-reuse-1", user_id="u7", post_id="p12", kind=wpb.LIKE)
    with pytest.raises(grpc.RpcError) as err:
        writer.WriteEngagements(wpb.WriteEngagementsRequest(events=[fresh, other]), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("events[1].event_id:")
    assert client.get(contract.applied_key("e-reuse-2")) is None  # the batch changed nothing

    post = create("e-reuse-3", "live-reuse")
    writer.WritePosts(wpb.WritePostsRequest(events=[post]), timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        writer.WritePosts(wpb.WritePostsRequest(events=[create("e-reuse-3", "live-reuse-other")]), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("events[0].event_id:")
