"""Redis' work overlapped with the request's own: the candidates' MGET sent before the
FAISS search (RetrieveCandidates.prefetch), the same candidates, records and answers as
one MGET after retrieve, with or without exclusions, and a request that ends in between
gives its Redis connection back; and the user's co-engagement built while the user's
round trip is on its way (HydrateUser)."""

from __future__ import annotations

import numpy as np
import pytest

from core.bundle import load_bundle
from core.retrieval import RetrievalParams
from service.pipeline import RankContext, RankPipeline, RankQuery
from service.stages.diversify import DiversifyCandidates
from service.stages.filters import FilterCandidates, default_filters
from service.stages.hydrate import HydrateCandidates, HydrateUser
from service.stages.respond import BuildResponse
from service.stages.retrieve import RetrieveCandidates
from service.stages.score import ScoreCandidates
from service.store import FeatureStore


@pytest.fixture(scope="module")
def bundle(published):
    return load_bundle(published)


@pytest.fixture
def store(service):
    s = FeatureStore(service.store.url, timeout_ms=5000, max_connections=2)
    yield s
    s.close()


def stages(store: FeatureStore, prefetch: bool) -> list:
    params = RetrievalParams(candidates=500)
    return [
        HydrateUser(store, params),
        RetrieveCandidates(params, store=store if prefetch else None),
        HydrateCandidates(store),
        FilterCandidates(default_filters(0)),
        ScoreCandidates(),
        DiversifyCandidates(),
        BuildResponse(),
    ]


def rank(bundle, pipeline: list, user: str, exclude: list[str] = ()) -> RankContext:
    ctx = RankContext(
        query=RankQuery(user_id=user, limit=50, exclude_post_ids=list(exclude)), bundle=bundle, now=bundle.data_end_ts
    )
    for stage in pipeline:
        stage.run(ctx)
    return ctx


def same(a: RankContext, b: RankContext) -> None:
    assert a.post_ids == b.post_ids
    assert np.array_equal(a.rows, b.rows)
    assert a.posts.tobytes() == b.posts.tobytes()
    assert [(i.post_id, i.score) for i in a.items] == [(i.post_id, i.score) for i in b.items]
    assert not a.degraded and not b.degraded


def test_prefetched_records_are_those_of_one_mget_after_retrieve(bundle, store):
    early, late = stages(store, prefetch=True), stages(store, prefetch=False)
    prefetched = 0
    for user in bundle.user_ids.take(np.arange(0, len(bundle.user_ids), max(1, len(bundle.user_ids) // 40))):
        ctx = rank(bundle, early, user)
        prefetched += bool(ctx.prefetched)
        same(ctx, rank(bundle, late, user))
        assert ctx.prefetch is None  # read, and its connection given back
    assert prefetched >= 20  # most home feeds search FAISS, so most were prefetched


def test_exclusions_after_the_prefetch_match_records_by_id(bundle, store):
    early, late = stages(store, prefetch=True), stages(store, prefetch=False)
    checked = 0
    for user in bundle.user_ids.take(np.arange(0, len(bundle.user_ids), max(1, len(bundle.user_ids) // 20))):
        first = rank(bundle, early, user)
        if len(first.prefetched) < 4:
            continue
        n = len(first.prefetched)
        # some of what was sent early, some of what FAISS added after it
        exclude = first.prefetched[1:3] + [p for p in first.post_ids if p not in set(first.prefetched)][:2]
        ctx = rank(bundle, early, user, exclude)
        assert ctx.prefetched[:n] == first.prefetched[:n] and ctx.removed["excluded"] == len(exclude)
        same(ctx, rank(bundle, late, user, exclude))
        checked += 1
    assert checked >= 5


class Boom(RuntimeError):
    pass


class Fail:
    name = "fail"

    def run(self, ctx: RankContext) -> None:
        raise Boom("the request ended between retrieve and hydrate_candidates")


def test_a_request_ending_after_the_prefetch_gives_its_connection_back(bundle, store):
    """A pool of two connections: had the sent MGET kept its connection, the third
    failed request would find none (redis-py: too many connections)."""
    params = RetrievalParams(candidates=500)
    pipeline = RankPipeline([HydrateUser(store, params), RetrieveCandidates(params, store=store), Fail()])
    user = bundle.user_ids[0]
    for _ in range(5):
        ctx = RankContext(query=RankQuery(user_id=user, limit=10), bundle=bundle, now=bundle.data_end_ts)
        with pytest.raises(Boom):
            pipeline.run(ctx)
        assert ctx.prefetched and ctx.prefetch is None
    assert len(store.read_post_records(bundle.version, [bundle.post_ids[0]])) == 1
    # and the next request reads records that belong to it, not a stale reply
    ctx = rank(bundle, stages(store, prefetch=True), user)
    same(ctx, rank(bundle, stages(store, prefetch=False), user))


def test_a_failed_send_degrades_the_request_once(bundle, store, monkeypatch):
    """Redis refusing the early MGET (here: the circuit breaker opens between the user's
    round trip and retrieve) degrades the request in hydrate_candidates with that reason,
    without a second attempt, and the answer comes from the bundle's records."""
    params = RetrievalParams(candidates=500)
    user = bundle.user_ids[0]
    ctx = RankContext(query=RankQuery(user_id=user, limit=10), bundle=bundle, now=bundle.data_end_ts)
    HydrateUser(store, params).run(ctx)
    assert not ctx.degraded
    breaker = store.breaker
    breaker._failures, breaker._open_until = breaker.threshold, float("inf")
    try:
        RetrieveCandidates(params, store=store).run(ctx)
        assert ctx.prefetched and ctx.prefetch is not None

        def again(*args, **kwargs):
            raise AssertionError("a second read of the records")

        monkeypatch.setattr(store, "read_post_records", again)
        monkeypatch.setattr(store, "finish_post_records", again)
        HydrateCandidates(store).run(ctx)
    finally:
        breaker._failures, breaker._open_until = 0, 0.0
    assert ctx.degraded == ["redis_circuit_open"] and ctx.prefetch is None
    assert len(ctx.posts) == ctx.size and ctx.vectors.shape[0] == ctx.size


def test_records_read_with_keys_grouped_by_length_come_back_in_candidate_order(bundle, store):
    """FeatureStore writes an MGET's keys grouped by length (service/store.py pack_keys)
    and puts the replies back: every id gets its own record, in the order asked, as a
    plain MGET of the same keys answers, whether the ids are ASCII or not, known or not."""
    import redis

    from core import contract
    from service.store import pack, pack_keys

    rng = np.random.default_rng(4)
    known = bundle.post_ids.take(rng.choice(len(bundle.post_ids), 120, replace=False))
    unknown = ["x", "a-much-longer-post-id-nobody-wrote", "p-été", "p" * 40]
    client = redis.Redis.from_url(store.url)
    try:
        for ids in (known, known[:1], unknown + known, [*known[:30], "p-été", *known[30:60]]):
            ids = list(ids)
            keys = [contract.post_key(bundle.version, p) for p in ids]
            assert store.read_post_records(bundle.version, ids) == client.mget(keys)
            pending = store.send_post_records(bundle.version, ids[:7])
            assert store.finish_post_records(pending, bundle.version, ids[7:]) == client.mget(keys)
    finally:
        client.close()
    packed, order = pack_keys("MGET", "k:", "}", ["bb", "a", "ccc", "d", "ee"])
    assert order == [1, 3, 0, 4, 2] and packed == pack([("MGET", "k:a}", "k:d}", "k:bb}", "k:ee}", "k:ccc}")])
    assert pack_keys("MGET", "k:", "}", ["é", "a"]) == (pack([("MGET", "k:é}", "k:a}")]), None)


def test_the_co_engagement_is_built_while_the_users_round_trip_is_on_its_way(bundle, store, monkeypatch):
    params = RetrievalParams(candidates=500)
    user = bundle.user_ids[3]
    ctx = RankContext(query=RankQuery(user_id=user, limit=10), bundle=bundle, now=bundle.data_end_ts)
    seen_at_finish = []
    finish = store.finish

    def finishing(pending, *args, **kwargs):
        if pending.op == "user":
            seen_at_finish.append(ctx.co_engaged)
        return finish(pending, *args, **kwargs)

    monkeypatch.setattr(store, "finish", finishing)
    HydrateUser(store, params).run(ctx)
    expected = bundle.co_engaged(user)
    assert seen_at_finish == [ctx.co_engaged] and ctx.co_engaged is not None  # before the replies were read
    assert np.array_equal(ctx.co_engaged.rows, expected.rows) and len(expected.rows) > 0
    assert np.array_equal(ctx.co_engaged.totals, expected.totals)

    def again(user_id):
        raise AssertionError("the co-engagement built a second time")

    monkeypatch.setattr(bundle, "co_engaged", again)
    RetrieveCandidates(params, store=store).run(ctx)
    HydrateCandidates(store).run(ctx)
    ScoreCandidates().run(ctx)
    assert ctx.size > 0 and not ctx.degraded


def test_a_failure_while_the_users_round_trip_is_on_its_way_gives_the_connection_back(bundle, store):
    """A pool of two connections: had the sent commands kept theirs, the third attempt
    would find none; the reads after it get their own replies, not the abandoned ones."""
    user = bundle.user_ids[0]
    community = bundle.community_ids[0]

    def boom() -> None:
        raise Boom("the request ended while Redis answered")

    for _ in range(5):
        with pytest.raises(Boom):
            store.user_reads(bundle.version, user, [community], None, hot_n=5, meanwhile=boom)
    got = store.user_reads(bundle.version, user, [community], None, hot_n=5)
    assert got.record is not None and len(got.recent) == 1
    assert store.read_post_records(bundle.version, [bundle.post_ids[0]])[0] is not None
