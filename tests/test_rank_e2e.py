"""End to end: tiny world -> train -> publish -> Rank over a real gRPC channel."""

from __future__ import annotations

import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from core import contract
from core.bundle import load_bundle
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from service.app import Service
from tests.conftest import service_config


@pytest.fixture(scope="module")
def plain_ranker(published, redis_server):
    """Diversity caps off and every indexed post retrieved: the answer must then be exactly
    the visible posts with the highest inner product with the user's vector."""
    svc = Service(
        service_config(published, community_share=0.0, per_author=0, candidates=5000), redis_server.url
    ).start(metrics=False)
    ch = grpc.insecure_channel(f"127.0.0.1:{svc.port}")
    yield ranking_pb2_grpc.FeedRankerStub(ch), svc
    ch.close()
    svc.stop(grace=1)


def visible_affinities(bundle, user_id: str, now: float, max_age_days: float = 14.0):
    b = bundle
    u = b.user_row[user_id]
    member = set(
        np.asarray(b[contract.MEMBERSHIP_COMMUNITY_FILE])[np.asarray(b[contract.MEMBERSHIP_USER_FILE]) == u].tolist()
    )
    rows = b.index.rows()
    comm = np.asarray(b[contract.POST_COMMUNITY_FILE])[rows]
    private = np.asarray(b[contract.COMMUNITY_PRIVATE_FILE])[comm]
    fresh = np.asarray(b[contract.POST_CREATED_AT_FILE])[rows] >= now - max_age_days * 86400
    ok = (~private | np.isin(comm, list(member))) & fresh & ~np.asarray(b[contract.POST_DELETED_FILE])[rows]
    rows = rows[ok]
    aff = np.asarray(b[contract.POST_VECTORS_FILE])[rows] @ np.asarray(b[contract.USER_FACTORS_FILE])[u]
    return {b.post_ids[r]: float(a) for r, a in zip(rows, aff)}


@pytest.mark.parametrize("user_id", ["u0", "u17", "u123", "u250"])
def test_rank_returns_the_highest_inner_products(plain_ranker, published, user_id):
    stub, svc = plain_ranker
    bundle = load_bundle(published)
    resp = stub.Rank(ranking_pb2.RankRequest(user_id=user_id, limit=10), timeout=10)
    assert resp.model_version == bundle.version
    assert not resp.degraded
    expected = visible_affinities(bundle, user_id, bundle.data_end_ts + 60)
    assert len(resp.items) == 10
    got = [(i.post_id, i.score) for i in resp.items]
    for post_id, score in got:
        assert post_id in expected, f"{post_id} is not a visible post for {user_id}"
        assert score == pytest.approx(expected[post_id], abs=1e-4)
    best = sorted(expected.values(), reverse=True)[:10]
    assert [s for _, s in got] == pytest.approx(best, abs=1e-4)
    # each item names its community as the bundle has it
    for item in resp.items:
        assert (
            item.community_id
            == bundle.community_ids[bundle[contract.POST_COMMUNITY_FILE][bundle.post_row[item.post_id]]]
        )


def test_health_reports_serving(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", "nichefeed.v1.FeedRanker"):
        assert (
            stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            == health_pb2.HealthCheckResponse.SERVING
        )


def test_reflection_lists_the_ranker(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "nichefeed.v1.FeedRanker" in names
    assert "grpc.health.v1.Health" in names


def _scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def _sample(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_the_request(ranker, service, metrics_port):
    before = _sample(_scrape(metrics_port), 'nichefeed_requests_total{code="OK",method="Rank"}')
    ranker.Rank(ranking_pb2.RankRequest(user_id="u5", limit=3), timeout=10)
    text = _scrape(metrics_port)
    assert _sample(text, 'nichefeed_requests_total{code="OK",method="Rank"}') == before + 1
    assert f'nichefeed_model_info{{version="{service.holder.current.version}"}} 1.0' in text
    # The shared bundle's scorer, and its trees scored by the compiled kernel (a blend)
    # or none at all (a linear scorer).
    scorer = service.holder.current.scorer
    trees = "c" if scorer.kind == "blend" else "none"
    assert f'nichefeed_model_scorer_info{{scorer="{scorer.kind}",trees="{trees}"}} 1.0' in text
    assert 'nichefeed_stage_latency_seconds_count{stage="retrieve"}' in text
