"""Redis comes back empty (restarted without its data): the service notices that the
serving version's data is gone, says so in one log line and a metric, answers writes
UNAVAILABLE (retryable) instead of "unknown post", keeps Rank answering from memory, and
recovers by itself once the model is published again. A real redis-server killed and
replaced by an empty one on the same port, a real service, real channels."""

from __future__ import annotations

import logging
import time

import grpc
import pytest
import redis
from prometheus_client import REGISTRY

from core import contract
from core.embedded_redis import EmbeddedRedis, free_port
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc, writes_pb2_grpc
from nichefeed.v1 import writes_pb2 as wpb
from service.app import Service
from tests.conftest import service_config
from training import publish as publishing


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[tuple[str, str]] = []

    def emit(self, record):
        self.lines.append((record.levelname, record.getMessage()))


@pytest.fixture
def world(tiny_bundle, tmp_path):
    port = free_port()
    server = EmbeddedRedis(tmp_path / "redis", port=port).start()
    with redis.Redis.from_url(server.url) as c:
        publishing.publish(tiny_bundle, c, progress=False)
    records = _Records()
    logging.getLogger("nichefeed.reload").addHandler(records)
    svc = Service(service_config(tiny_bundle, reload_interval_s=0.05), server.url).start(metrics=False)
    ch = grpc.insecure_channel(f"127.0.0.1:{svc.port}")
    state = {"server": server}
    yield svc, ranking_pb2_grpc.FeedRankerStub(ch), writes_pb2_grpc.FeedWriterStub(ch), state, records, tmp_path
    ch.close()
    svc.stop(grace=1)
    logging.getLogger("nichefeed.reload").removeHandler(records)
    state["server"].stop()


def _missing() -> float:
    return REGISTRY.get_sample_value("nichefeed_serving_data_missing")


def _wait_for_missing(value: float) -> float:
    for _ in range(200):  # bounded: the reloader polls every 50 ms
        if _missing() == value:
            break
        time.sleep(0.025)
    return _missing()


def _like(event_id: str, post_id: str) -> wpb.WriteEngagementsRequest:
    return wpb.WriteEngagementsRequest(
        events=[wpb.EngagementEvent(event_id=event_id, user_id="u1", post_id=post_id, kind=wpb.LIKE)]
    )


def test_redis_back_empty_is_said_once_writes_are_retryable_and_a_republish_recovers(world, tiny_bundle):
    svc, ranker, writer, state, records, tmp_path = world
    post = svc.holder.current.post_ids[0]
    assert _missing() == 0
    state["server"].kill()  # Redis restarts without its data: a fresh server, same port
    state["server"] = EmbeddedRedis(tmp_path / "empty-redis", port=state["server"].port).start()
    assert _wait_for_missing(1) == 1
    errors = [m for level, m in records.lines if level == "ERROR"]
    assert len(errors) == 1 and f"lost the data of serving model {tiny_bundle.name}" in errors[0]
    assert "make publish" in errors[0]

    with pytest.raises(grpc.RpcError) as err:
        writer.WriteEngagements(_like("emptied-1", post), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "must be published again" in err.value.details() and "retry with the same event ids" in err.value.details()
    resp = ranker.Rank(ranking_pb2.RankRequest(user_id="u3", limit=5), timeout=10)
    assert resp.degraded and len(resp.items) == 5
    time.sleep(0.2)  # several polls later: still one line
    assert len([m for level, m in records.lines if level == "ERROR"]) == 1

    with redis.Redis.from_url(state["server"].url) as c:
        publishing.publish(tiny_bundle, c, progress=False)
    assert _wait_for_missing(0) == 0
    assert writer.WriteEngagements(_like("emptied-1", post), timeout=10).applied == 1  # the retry goes through
    assert not ranker.Rank(ranking_pb2.RankRequest(user_id="u3", limit=5), timeout=10).degraded
    assert [level for level, m in records.lines if "in Redis again" in m] == ["WARNING"]


def test_a_write_before_the_reloader_noticed_is_retryable_too(world):
    """Between Redis losing its data and the next poll, "unknown post" is checked against
    the published marker: UNAVAILABLE, not INVALID_ARGUMENT."""
    svc, _, writer, state, _, _ = world
    svc.reloader.stop()  # no poll will notice
    post = svc.holder.current.post_ids[0]
    with pytest.raises(grpc.RpcError) as err:  # while the data is there, unknown is unknown
        writer.WriteEngagements(_like("early-0", "no-such-post"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with redis.Redis.from_url(state["server"].url) as c:
        c.flushall()
    with pytest.raises(grpc.RpcError) as err:
        writer.WriteEngagements(_like("early-1", post), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert svc.holder.data_missing is None  # said by the reloader only; the write did not wait for it


def test_a_version_published_before_the_marker_is_not_taken_for_lost_data(world, tiny_bundle):
    """No published marker but the version's records there (published by an older
    version of nichefeed): not lost. Both gone: lost."""
    svc, _, _, state, _, _ = world
    svc.reloader.stop()  # polls by hand below, deterministic
    with redis.Redis.from_url(state["server"].url) as c:
        c.delete(contract.published_key(tiny_bundle.name))
        svc.reloader.check_once()
        assert svc.holder.data_missing is None
        c.delete(contract.user_key(tiny_bundle.name, svc.holder.current.user_ids[0]))
        svc.reloader.check_once()
        assert svc.holder.data_missing is not None
        publishing.publish(tiny_bundle, c, progress=False)
        svc.reloader.check_once()
        assert svc.holder.data_missing is None and _missing() == 0
