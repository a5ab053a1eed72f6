"""A model trained on catalogue-like logs (timeless items, no memberships) serves: its
posts are old by the wall clock, and the age filter knows not to apply."""

from __future__ import annotations

import grpc
import redis

from core.bundle import load_bundle
from core.embedded_redis import EmbeddedRedis, free_port
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from service.app import Service
from tests.catalogue_logs import write_catalogue_logs
from tests.conftest import service_config
from training import publish as publishing
from training.params import EvalParams, TrainParams
from training.train import train


def test_catalogue_model_serves_under_the_wall_clock(tmp_path):
    data = write_catalogue_logs(tmp_path / "logs", users=300, items=200)
    # One split point: what is checked here is serving, and the automatic choice replays
    # up to 16 on so small a log, each with its own scorer refits (~40 s of the test at eight).
    params = TrainParams(eval=EvalParams(split_points=1))
    bundle = train(data, tmp_path / "models", params, progress=False, quiet=True)
    assert load_bundle(bundle).manifest.params["index_window_applied_days"] is None
    with EmbeddedRedis(tmp_path / "redis", port=free_port()) as server:
        publishing.publish(bundle, redis.Redis.from_url(server.url), progress=False)
        svc = Service(service_config(bundle, clock="wall"), server.url).start(metrics=False)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{svc.port}") as channel:
                stub = ranking_pb2_grpc.FeedRankerStub(channel)
                user = load_bundle(bundle).user_ids[0]
                resp = stub.Rank(ranking_pb2.RankRequest(user_id=user, limit=10), timeout=10)
        finally:
            svc.stop(grace=1)
    assert len(resp.items) == 10
    assert not resp.degraded
