"""The blended scorer (--scorer-objective blend, or chosen by auto): the softmax and the
lambdarank trees, each standardised within its request and averaged. Training scores
many requests in one call and the service one; both must get the same order."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import redis

from core.bundle import load_bundle
from core.embedded_redis import EmbeddedRedis, free_port
from core.scoring import BlendScorer, LinearScorer, TreeScorer, load_scorer, request_standardised
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from service.app import Service
from tests.conftest import service_config
from tests.test_tree_scorer import xor_requests
from training import publish as publishing
from training.params import EvalParams, ScorerParams, TrainParams
from training.reevaluate import reevaluate
from training.scorer import fit_scorer
from training.train import train

SQRT_3_2 = np.sqrt(1.5)  # (3 - 2) / std(1, 2, 3)


@pytest.fixture(scope="module")
def fitted():
    X, y, requests = xor_requests(1, n_requests=120)
    return X, y, requests, fit_scorer(X, y, requests, ScorerParams(objective="blend"), {"windows": [[0, 120]]})


def test_each_request_is_put_on_its_own_scale():
    values = np.array([1.0, 2.0, 3.0, 5.0, 5.0, 10.0, 20.0, 7.0])
    requests = np.array([4, 4, 4, 0, 0, 9, 9, 2])  # any keys, in any order
    got = request_standardised(values, requests)
    # a request with one value, or all equal, has no spread: 0, never a division by 0
    np.testing.assert_allclose(got, [-SQRT_3_2, 0.0, SQRT_3_2, 0.0, 0.0, -1.0, 1.0, 0.0])
    np.testing.assert_allclose(request_standardised(values[:3], None), [-SQRT_3_2, 0.0, SQRT_3_2])
    assert request_standardised(np.empty(0), None).shape == (0,)


def test_the_blend_is_its_two_parts_fitted_alone_and_averaged_on_the_requests_scale(fitted):
    X, y, requests, blend = fitted
    assert isinstance(blend, BlendScorer) and blend.kind == "blend"
    softmax = fit_scorer(X, y, requests, ScorerParams(objective="softmax"), {})
    trees = fit_scorer(X, y, requests, ScorerParams(objective="lambdarank"), {})
    rows = X[:20]  # one request
    np.testing.assert_array_equal(blend.linear.score(rows), softmax.score(rows))
    np.testing.assert_array_equal(blend.trees.score(rows), trees.score(rows))
    a, b = softmax.score(rows).astype(np.float64), trees.score(rows)
    by_hand = 0.5 * (a - a.mean()) / a.std() + 0.5 * (b - b.mean()) / b.std()
    np.testing.assert_allclose(blend.score(rows), by_hand, rtol=1e-12, atol=1e-12)
    # what the report shows of it: both parts' weights, and the windows it learned from
    assert blend.info["objective"] == "blend" and blend.info["windows"] == [[0, 120]]
    assert set(blend.info["weights_by_feature"]) == set(blend.info["gain_share_by_feature"])


def test_scoring_many_requests_at_once_gives_each_what_it_gets_alone(fitted):
    """Training's evaluation scores every user's candidates in one call; the service one
    request. A request's scores must not depend on the others scored beside it."""
    X, _, requests, blend = fitted
    together = blend.score(X[:200], requests[:200])
    for r in np.unique(requests[:200]):
        rows = requests[:200] == r
        np.testing.assert_allclose(together[rows], blend.score(X[:200][rows]), rtol=1e-12, atol=1e-12)
    # and not as one request: the scales differ, so would the order across requests' rows
    assert not np.allclose(together, blend.score(X[:200]))


def test_the_blend_keeps_what_each_part_takes(fitted):
    """The interaction only the trees can take, and the linear scorer's ranking skill
    where the trees are poor: on held-out requests the blend finds the XOR hit far above
    chance (1 in 20), as the trees do, where the softmax cannot."""
    _, _, _, blend = fitted
    Xt, yt, rt = xor_requests(2, n_requests=120)
    hits = [yt[rt == r][np.argmax(s)] for r in np.unique(rt) for s in [blend.score(Xt[rt == r])]]
    linear_hits = [yt[rt == r][np.argmax(blend.linear.score(Xt[rt == r]))] for r in np.unique(rt)]
    assert np.mean(hits) > 0.3 > 0.15 > np.mean(linear_hits)


def test_a_blend_survives_its_json_and_a_damaged_one_is_refused(fitted):
    X, _, requests, blend = fitted
    again = load_scorer(blend.to_json())
    assert isinstance(again, BlendScorer) and again.info == blend.info
    np.testing.assert_array_equal(again.score(X[:60], requests[:60]), blend.score(X[:60], requests[:60]))
    raw = json.loads(blend.to_json())
    for damage, message in (
        (lambda r: r.pop("trees"), "needs its 'linear' and 'trees'"),
        (lambda r: r.update(trees=r["linear"]), "'trees' a lambdarank one"),
        (lambda r: r.update(linear=r["trees"]), "'linear' must hold a linear scorer"),
        (lambda r: r["trees"].update(model=r["trees"]["model"][:100]), "does not match its sha256"),
        (lambda r: r["linear"].update(scale=[0.0] * len(r["linear"]["scale"])), "scale must be positive"),
    ):
        broken = json.loads(json.dumps(raw))
        damage(broken)
        with pytest.raises(ValueError, match=message):
            load_scorer(json.dumps(broken))
    assert isinstance(load_scorer(LinearScorer.affinity_only().to_json()), LinearScorer)
    assert isinstance(load_scorer(json.dumps(raw["trees"])), TreeScorer)


def test_a_blend_bundle_is_recomputed_exactly_and_served_over_grpc(tiny_data, tmp_path):
    params = TrainParams(test_fraction=0.5, scorer_fit=ScorerParams(objective="blend"), eval=EvalParams(split_points=2))
    bundle = train(tiny_data, tmp_path / "models", params, progress=False, quiet=True)
    loaded = load_bundle(bundle)
    assert isinstance(loaded.scorer, BlendScorer) and loaded.manifest.params["scorer_fit"]["objective"] == "blend"
    # Both points' blends refitted from the data give every saved number again.
    assert reevaluate(bundle)[1] == []
    with EmbeddedRedis(tmp_path / "redis", port=free_port()) as server:
        publishing.publish(bundle, redis.Redis.from_url(server.url), progress=False)
        svc = Service(service_config(bundle), server.url).start(metrics=False)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{svc.port}") as channel:
                stub = ranking_pb2_grpc.FeedRankerStub(channel)
                resp = stub.Rank(ranking_pb2.RankRequest(user_id=loaded.user_ids[0], limit=10), timeout=10)
        finally:
            svc.stop(grace=1)
    assert len(resp.items) == 10 and not resp.degraded
    assert resp.model_version == bundle.name
    # a blend's score is an average of two standardised scores: within a few deviations of 0
    assert all(np.isfinite(item.score) and abs(item.score) < 10 for item in resp.items)
