"""Hides and reports push a post down for everyone, through the live write path and the
learned scorer (whose negative-rate weight is held at or below a policy bound)."""

from __future__ import annotations

import json

import grpc
import redis

from core import contract
from core.embedded_redis import EmbeddedRedis, free_port
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc, writes_pb2_grpc
from nichefeed.v1 import writes_pb2 as wpb
from service.app import Service
from tests.conftest import service_config
from training import publish as publishing
from training.scorer import MAX_WEIGHT


def test_learned_scorer_honours_the_negative_feedback_bound(learned_bundle):
    scorer = json.loads((learned_bundle / contract.SCORER_FILE).read_text())
    if scorer["kind"] == "blend":  # the default: its linear half holds the bound, its trees a monotone constraint
        scorer = scorer["linear"]
    w = dict(zip(scorer["features"], scorer["weights"]))
    for feature, bound in MAX_WEIGHT.items():
        assert w[feature] <= bound + 1e-6


def test_reports_push_a_post_down(learned_bundle, tmp_path):
    with EmbeddedRedis(tmp_path / "redis", port=free_port()) as server:
        publishing.publish(learned_bundle, redis.Redis.from_url(server.url), force=True, progress=False)
        svc = Service(service_config(learned_bundle), server.url).start(metrics=False)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{svc.port}") as channel:
                ranker = ranking_pb2_grpc.FeedRankerStub(channel)
                writer = writes_pb2_grpc.FeedWriterStub(channel)
                viewer = "u3"
                feed = ranker.Rank(ranking_pb2.RankRequest(user_id=viewer, limit=5), timeout=5)
                post = feed.items[0].post_id

                def score() -> float:
                    resp = ranker.Rank(
                        ranking_pb2.RankRequest(user_id=viewer, limit=1, candidate_post_ids=[post]), timeout=5
                    )
                    return resp.items[0].score

                before = score()
                writer.WriteEngagements(
                    wpb.WriteEngagementsRequest(
                        events=[
                            wpb.EngagementEvent(
                                event_id=f"rep-{i}",
                                user_id=f"u{100 + i}",
                                post_id=post,
                                kind=wpb.REPORT if i % 2 else wpb.HIDE,
                            )
                            for i in range(6)
                        ]
                    ),
                    timeout=5,
                )
                after = score()
        finally:
            svc.stop(grace=1)
    assert after < before
