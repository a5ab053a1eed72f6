"""The Redis password never reaches output or metrics: a real service process (single and
--workers 2) on a real redis-server that requires a password."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
import redis

from core.embedded_redis import EmbeddedRedis, free_port
from core.settings import redact_url
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from tests.service_process import start_service, stop_service
from training import publish as publishing

PASSWORD = "pa55-word-never-printed"


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://alice:secret@host/0", "redis://***:***@host/0"),
        ("rediss://:p@ss@[::1]:6380/0", "rediss://:***@[::1]:6380/0"),
        ("unix:///var/r.sock?db=0&password=secret", "unix:///var/r.sock?db=0&password=***"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("unix:///var/a@b/r.sock?db=0", "unix:///var/a@b/r.sock?db=0"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


@pytest.fixture(scope="module")
def guarded_redis(tiny_bundle, tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("auth-redis"), port=free_port()).start()
    with redis.Redis.from_url(server.url) as client:
        publishing.publish(tiny_bundle, client, progress=False)
        client.config_set("requirepass", PASSWORD)
    yield f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0", server.port
    with redis.Redis(port=server.port, password=PASSWORD) as client:
        client.config_set("requirepass", "")
    server.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_the_redis_password_appears_in_no_output_and_no_metric(guarded_redis, tiny_bundle, workers):
    url, port = guarded_redis
    grpc_port, metrics_port = free_port(), free_port()
    proc, line = start_service(
        [
            "--workers",
            str(workers),
            "--models-dir",
            str(tiny_bundle.parent),
            "--grpc-addr",
            f"127.0.0.1:{grpc_port}",
            "--metrics-addr",
            f"127.0.0.1:{metrics_port}",
            "--clock",
            "data",
            "--log-level",
            "INFO",
        ],
        env={"NICHEFEED_REDIS_URL": url},
    )
    try:
        assert f"redis redis://:***@127.0.0.1:{port}/0)" in line, line
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            resp = ranking_pb2_grpc.FeedRankerStub(ch).Rank(ranking_pb2.RankRequest(user_id="u3", limit=5), timeout=10)
        assert len(resp.items) == 5 and not resp.degraded  # it did authenticate
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    finally:
        status, out, err = stop_service(proc)
    assert status == 0, err
    assert PASSWORD not in line + out + err + scrape
