"""A bad bundle on the pointer never takes capacity down: a restarted service and a
replacement worker serve the last good version (one error line, a metric), and a worker
that keeps dying is restarted after a growing delay, not in a tight loop."""

from __future__ import annotations

import logging
import os
import signal
import time
import urllib.request

import grpc
import pytest
import redis
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from core import contract
from core.embedded_redis import EmbeddedRedis, free_port
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from service.app import Service
from service.workers import RestartBackoff
from tests.conftest import service_config
from tests.service_process import start_service, stop_service
from tests.test_private_redis import copy_as_version
from training import publish as publishing

GOOD, BAD = "20990101T000000Z-goodgood", "20990102T000000Z-badbadba"


@pytest.fixture
def bad_on_pointer(tiny_bundle, tmp_path):
    """GOOD published; then BAD (its vectors corrupted on disk) on the pointer and at the
    head of the history, as a publish of a bundle damaged afterwards leaves them."""
    models = tmp_path / "models"
    good = copy_as_version(tiny_bundle, models, GOOD)
    bad = copy_as_version(tiny_bundle, models, BAD)
    with open(bad / contract.POST_VECTORS_FILE, "r+b") as fh:
        fh.seek(200)
        fh.write(b"\xff" * 16)
    server = EmbeddedRedis(tmp_path / "redis", port=free_port()).start()
    client = redis.Redis.from_url(server.url)
    publishing.publish(good, client, progress=False)
    yield models, server, client
    client.close()
    server.stop()


def _point_at_bad(client) -> None:
    client.set(contract.CURRENT_KEY, BAD)
    client.lpush(contract.HISTORY_KEY, BAD)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_a_restart_serves_the_last_good_version(bad_on_pointer):
    models, server, client = bad_on_pointer
    _point_at_bad(client)
    fallbacks = REGISTRY.get_sample_value("nichefeed_model_fallbacks_total") or 0.0
    records = _Records()
    logging.getLogger("nichefeed.reload").addHandler(records)
    try:
        svc = Service(service_config(models / GOOD), server.url).start(metrics=False)
    finally:
        logging.getLogger("nichefeed.reload").removeHandler(records)
    try:
        assert svc.holder.current.version == GOOD
        assert len(records.lines) == 1, records.lines
        assert records.lines[0].startswith(f"model {BAD} (the current pointer) cannot be served: ")
        assert contract.POST_VECTORS_FILE in records.lines[0] and f"last good version {GOOD}" in records.lines[0]
        assert REGISTRY.get_sample_value("nichefeed_model_fallbacks_total") == fallbacks + 1
        assert REGISTRY.get_sample_value("nichefeed_model_refused") == 1
        with grpc.insecure_channel(f"127.0.0.1:{svc.port}") as ch:
            resp = ranking_pb2_grpc.FeedRankerStub(ch).Rank(ranking_pb2.RankRequest(user_id="u3", limit=5), timeout=10)
        assert resp.model_version == GOOD and len(resp.items) == 5 and not resp.degraded
    finally:
        svc.stop(grace=1)


def _scrape(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def _worker_pids(samples: dict) -> set[int]:
    return {
        int(dict(labels)["pid"]) for (name, labels), v in samples.items() if name == "nichefeed_worker_up" and v == 1
    }


def test_a_replacement_worker_serves_the_last_good_version(bad_on_pointer):
    models, server, client = bad_on_pointer
    grpc_port, metrics_port = free_port(), free_port()
    proc, line = start_service(
        ["--workers", "2", "--redis-url", server.url, "--models-dir", str(models)]
        + ["--grpc-addr", f"127.0.0.1:{grpc_port}", "--metrics-addr", f"127.0.0.1:{metrics_port}"]
        + ["--clock", "data", "--reload-interval-s", "0.2"]
    )
    try:
        assert f"serving model {GOOD}" in line and "with 2 workers" in line, line
        _point_at_bad(client)
        for _ in range(100):  # bounded: both workers' reloaders refuse BAD within 0.2 s
            if _scrape(metrics_port).get(("nichefeed_model_reloads_total", (("outcome", "refused"),))) == 2:
                break
            time.sleep(0.1)
        victim, survivor = sorted(_worker_pids(_scrape(metrics_port)))
        os.kill(victim, signal.SIGKILL)
        for _ in range(300):  # bounded: restarted after 0.5 s, then it loads GOOD
            samples = _scrape(metrics_port)
            if len(_worker_pids(samples)) == 2 and victim not in _worker_pids(samples):
                break
            time.sleep(0.1)
        assert survivor in _worker_pids(samples) and len(_worker_pids(samples)) == 2
        assert samples[("nichefeed_worker_restarts_total", ())] == 1
        assert samples[("nichefeed_model_fallbacks_total", ())] == 1
        assert samples[("nichefeed_model_info", (("version", GOOD),))] == 1
        channels = [
            grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(6)
        ]
        try:
            versions = {
                ranking_pb2_grpc.FeedRankerStub(ch)
                .Rank(ranking_pb2.RankRequest(user_id="u3", limit=5), timeout=10)
                .model_version
                for ch in channels
            }
        finally:
            for ch in channels:
                ch.close()
        assert versions == {GOOD}
    finally:
        status, _, err = stop_service(proc)
    assert status == 0, err
    assert err.count(f"model {BAD} (the current pointer) cannot be served") == 1


def test_restart_delays_grow_while_workers_die_young_and_start_over_after_a_stable_run():
    backoff = RestartBackoff(first_s=0.5, max_s=4.0, stable_s=60.0)
    assert [backoff.delay(lived_s=1.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.delay(lived_s=120.0) == 0.5
    assert backoff.delay(lived_s=1.0) == 1.0
