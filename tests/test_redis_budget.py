"""The Redis budget of a Rank request follows its deadline: a reply delayed past the
no-deadline timeout (50 ms) but well inside the client's deadline is waited for, not
turned into a degraded answer; the cap still bounds the wait. Real redis-server (paused
with CLIENT PAUSE), real service, real channel."""

from __future__ import annotations

import time

import grpc
import pytest
import redis
from prometheus_client import REGISTRY

from core.embedded_redis import EmbeddedRedis, free_port
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from service.app import Service
from service.store import StoreUnavailable
from tests.conftest import service_config
from training import publish as publishing


@pytest.fixture(scope="module")
def default_timeouts(tiny_bundle, tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("budget-redis"), port=free_port()).start()
    client = redis.Redis.from_url(server.url)
    publishing.publish(tiny_bundle, client, progress=False)
    # The shipped defaults: 50 ms without a deadline, 500 ms at most with one.
    cfg = service_config(tiny_bundle, redis_timeout_ms=50.0, redis_max_budget_ms=500.0, reload_interval_s=3600)
    svc = Service(cfg, server.url).start(metrics=False)
    ch = grpc.insecure_channel(f"127.0.0.1:{svc.port}")
    yield svc, ranking_pb2_grpc.FeedRankerStub(ch), client
    ch.close()
    svc.stop(grace=1)
    client.close()
    server.stop()


def test_the_budget_is_a_share_of_the_deadline_up_to_the_cap(default_timeouts):
    store = default_timeouts[0].store
    assert store.budget(None) == 0.05
    assert store.budget(time.monotonic() + 10.0) == 0.5
    assert 0.09 < store.budget(time.monotonic() + 0.2) <= 0.1
    with pytest.raises(StoreUnavailable) as err:
        store.budget(time.monotonic() + 0.0005)
    assert err.value.reason == "no_time"


def test_a_reply_delayed_past_50ms_inside_the_deadline_is_not_degraded(default_timeouts):
    svc, stub, client = default_timeouts
    assert not stub.Rank(ranking_pb2.RankRequest(user_id="u3", limit=5), timeout=5).degraded
    degraded = REGISTRY.get_sample_value("nichefeed_degraded_responses_total")
    client.execute_command("CLIENT", "PAUSE", 250)  # every reply waits ~250 ms
    resp = stub.Rank(ranking_pb2.RankRequest(user_id="u3", limit=5), timeout=5)
    assert not resp.degraded and len(resp.items) == 5
    assert REGISTRY.get_sample_value("nichefeed_degraded_responses_total") == degraded
