"""The lambdarank scorer (--scorer-objective lambdarank): trees that take what a linear
score cannot, stored in the bundle, refitted identically by make evaluate, and served
over gRPC like any other scorer."""

from __future__ import annotations

import json
from dataclasses import replace

import grpc
import numpy as np
import pytest
import redis

from core.bundle import load_bundle
from core.embedded_redis import EmbeddedRedis, free_port
from core.scoring import FEATURES, BlendScorer, LinearScorer, TreeScorer, load_scorer, model_digest
from nichefeed.v1 import ranking_pb2, ranking_pb2_grpc
from service.app import Service
from tests.conftest import service_config
from training import publish as publishing
from training.params import EvalParams, ScorerParams, TrainParams
from training.reevaluate import reevaluate
from training.scorer import LAMBDARANK_ROUNDS, fit_scorer, lambdarank_booster
from training.train import train

A, B = FEATURES.index("hot"), FEATURES.index("freshness")


def xor_requests(seed: int, n_requests: int = 300, per_request: int = 20):
    """The positive of each request is the candidate where `hot` and `freshness` have the
    same sign and are both large: no weighted sum of the two separates it."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_requests * per_request, len(FEATURES))).astype(np.float32)
    X[:, FEATURES.index("negative_rate")] = 0.0
    requests = np.repeat(np.arange(n_requests), per_request)
    signal = X[:, A] * X[:, B]
    y = np.zeros(len(X))
    for r in range(n_requests):
        rows = np.arange(r * per_request, (r + 1) * per_request)
        y[rows[np.argmax(signal[rows])]] = 1.0
    return X, y, requests


def top1_hit_rate(scores: np.ndarray, y: np.ndarray, requests: np.ndarray) -> float:
    hits = [
        y[rows][np.argmax(scores[rows])] for rows in np.split(np.arange(len(y)), np.flatnonzero(np.diff(requests)) + 1)
    ]
    return float(np.mean(hits))


def test_trees_rank_an_interaction_a_linear_scorer_cannot():
    X, y, requests = xor_requests(1)
    Xt, yt, rt = xor_requests(2)
    tree = fit_scorer(X, y, requests, ScorerParams(objective="lambdarank"), {})
    linear = fit_scorer(X, y, requests, ScorerParams(objective="softmax"), {})
    assert isinstance(tree, TreeScorer) and tree.info["trees"] == LAMBDARANK_ROUNDS == 100
    # held-out requests: chance is 1 in 20
    assert top1_hit_rate(tree.score(Xt), yt, rt) > 0.5 > 0.15 > top1_hit_rate(linear.score(Xt), yt, rt)
    shares = tree.info["gain_share_by_feature"]
    assert shares["hot"] + shares["freshness"] > 0.5


def test_scorer_trees_sets_the_ensemble_and_keeps_its_total_step():
    """--scorer-trees 20: twenty trees at rate 10 / 20, in the lambdarank scorer and in the
    blend's trees alike."""
    X, y, requests = xor_requests(4, n_requests=100)
    params = ScorerParams(objective="lambdarank", trees=20)
    tree = fit_scorer(X, y, requests, params, {})
    blend = fit_scorer(X, y, requests, replace(params, objective="blend"), {})
    for model in (tree.model, blend.trees.model):
        assert model.count("\nTree=") == 20 and "[learning_rate: 0.5]" in model


def test_the_scorer_json_round_trips_and_reads_the_columns_it_was_fitted_on():
    X, y, requests = xor_requests(3, n_requests=100)
    named = ("freshness", "hot")  # two columns, in another order than FEATURES'
    cols = [FEATURES.index(f) for f in named]
    booster = lambdarank_booster(X[:, cols], y, requests, seed=7, names=named)
    scorer = TreeScorer(booster.model_to_string(), named)
    again = load_scorer(scorer.to_json())
    assert isinstance(again, TreeScorer) and again.features == named
    np.testing.assert_array_equal(again.score(X), booster.predict(X[:, cols].astype(np.float64)))
    assert isinstance(load_scorer(LinearScorer.affinity_only().to_json()), LinearScorer)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda raw: raw.update(model="not a model"), "does not match its sha256"),
        (lambda raw: raw.update(model="not a model", model_sha256=model_digest("not a model")), "lambdarank scorer: "),
        (lambda raw: raw.update(features=["hot"]), "a model of 21 features, 1 named"),
        (lambda raw: raw.update(features=["no_such_feature"] * 21), "must be names among"),
    ],
)
def test_a_damaged_tree_scorer_is_refused_with_the_reason(edit, message):
    X, y, requests = xor_requests(4, n_requests=50)
    raw = json.loads(fit_scorer(X, y, requests, ScorerParams(objective="lambdarank"), {}).to_json())
    edit(raw)
    with pytest.raises(ValueError, match=message):
        load_scorer(json.dumps(raw))


@pytest.mark.parametrize("objective, kind", [("lambdarank", TreeScorer), ("blend", BlendScorer)])
def test_a_tree_bundle_is_recomputed_exactly_and_served_over_grpc(objective, kind, tiny_data, tmp_path):
    """The lambdarank trees alone, and blended with the softmax (the default)."""
    params = TrainParams(
        test_fraction=0.5, scorer_fit=ScorerParams(objective=objective), eval=EvalParams(split_points=2)
    )
    bundle = train(tiny_data, tmp_path / "models", params, progress=False, quiet=True)
    loaded = load_bundle(bundle)
    assert isinstance(loaded.scorer, kind) and loaded.manifest.params["scorer_fit"]["objective"] == objective
    # Both points' scorers refitted from the data give every saved number again.
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
    assert all(np.isfinite(item.score) for item in resp.items)


def test_a_truncated_model_text_is_refused_before_lightgbm_parses_it():
    """LightGBM aborts the whole process on some damaged model texts: the digest stops
    them first (half the text here; with the digest check off this test kills pytest)."""
    X, y, requests = xor_requests(5, n_requests=50)
    raw = json.loads(fit_scorer(X, y, requests, ScorerParams(objective="lambdarank"), {}).to_json())
    raw["model"] = raw["model"][: len(raw["model"]) // 2]
    with pytest.raises(ValueError, match="does not match its sha256"):
        load_scorer(json.dumps(raw))


def test_reports_never_raise_a_posts_tree_score():
    """The policy the linear scorer holds as a weight bound (MAX_WEIGHT): here negatives
    come with the positives, as on busy posts, yet raising a candidate's negative rate
    never raises its score."""
    X, y, requests = xor_requests(6)
    neg = FEATURES.index("negative_rate")
    X[:, neg] = y * 2.0 + np.random.default_rng(0).normal(size=len(y)) * 0.1  # positives are reported more
    tree = fit_scorer(X, y, requests, ScorerParams(objective="lambdarank"), {})
    rows = X[:200].copy()
    before = tree.score(rows)
    for step in (0.5, 1.0, 3.0):
        rows[:, neg] += step
        after = tree.score(rows)
        assert (after <= before + 1e-12).all()
        before = after
