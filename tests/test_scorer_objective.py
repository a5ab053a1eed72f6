"""The scorer's two objectives on examples with known answers (training/scorer.py)."""

import numpy as np

from core.scoring import FEATURES
from training.params import ScorerParams
from training.scorer import fit_scorer, fit_softmax

D = len(FEATURES)
BUSY, SHARP = FEATURES.index("hot"), FEATURES.index("freshness")


def requests_world(seed: int = 3, n_requests: int = 300, per_request: int = 20):
    """Within a request the positive is the candidate with the highest SHARP (plus noise);
    BUSY is the same for every candidate of a request and higher where the request holds
    more positives: it tells busy requests from quiet ones, never one candidate from
    another."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_requests * per_request, D)).astype(np.float32)
    # Policy bounds this weight at -0.5 or below (scorer.MAX_WEIGHT); as a noise column it
    # would cost ranking what the test means to measure, so it is constant (weight 0).
    X[:, FEATURES.index("negative_rate")] = 0.0
    y = np.zeros(len(X))
    requests = np.repeat(np.arange(n_requests), per_request)
    for r in range(n_requests):
        rows = np.arange(r * per_request, (r + 1) * per_request)
        n_pos = 1 + r % 3
        busy = float(n_pos)
        X[rows, BUSY] = busy
        best = rows[np.argsort(-(X[rows, SHARP] + 0.3 * rng.normal(size=per_request)))[:n_pos]]
        y[best] = 1.0
    return X, y, requests


def test_softmax_weighs_only_what_differs_within_a_request():
    X, y, requests = requests_world()
    w, mean, scale, bias = fit_softmax(X, y, requests, l2=1.0)
    assert bias == 0.0
    assert abs(w[BUSY]) < 1e-6  # constant within every request: no gradient, L2 keeps it 0
    assert w[SHARP] > 1.0
    others = np.delete(np.abs(w), [BUSY, SHARP])
    assert others.max() < 0.3 * w[SHARP]


def test_softmax_ranks_each_requests_positives_first():
    X, y, requests = requests_world(seed=5, n_requests=800)
    scorer = fit_scorer(X, y, requests, ScorerParams(objective="softmax"), {})
    assert scorer.kind == "softmax" and scorer.info["objective"] == "softmax"

    def hits(scores):
        found = 0
        for r in np.unique(requests):
            rows = np.flatnonzero(requests == r)
            n_pos = int(y[rows].sum())
            found += int(y[rows[np.argsort(-scores[rows])[:n_pos]]].sum())
        return found

    # The best any scorer can do here is SHARP's own order (the noise is unseen); chance
    # finds n_pos / 20 of them.
    assert hits(X[:, SHARP]) > 0.6 * y.sum()
    assert hits(scorer.score(X)) >= 0.95 * hits(X[:, SHARP])


def test_logistic_reads_the_busy_request_feature_as_a_signal():
    """The contrast the softmax objective exists for: engaged-or-not, each candidate
    alone, credits the feature that only says how busy the request is."""
    X, y, requests = requests_world()
    scorer = fit_scorer(X, y, requests, ScorerParams(objective="logistic"), {})
    assert scorer.kind == "logistic"
    assert scorer.weights[BUSY] > 0.3


def test_requests_without_a_choice_teach_nothing():
    X, y, requests = requests_world(seed=7, n_requests=60)
    w0, *_ = fit_softmax(X, y, requests, l2=1.0)
    rng = np.random.default_rng(1)
    extra = rng.normal(size=(40, D)).astype(np.float32)  # two requests: all negative, all positive
    extra[:, FEATURES.index("negative_rate")] = 0.0
    X2 = np.vstack([X, extra])
    y2 = np.concatenate([y, np.zeros(20), np.ones(20)])
    r2 = np.concatenate([requests, np.full(20, 1000), np.full(20, 1001)])
    w1, *_ = fit_softmax(X2, y2, r2, l2=1.0)
    # Standardisation sees the extra rows, so compare the weights on the raw scale.
    _, mean0, scale0, _ = fit_softmax(X, y, requests, l2=1.0)
    _, mean1, scale1, _ = fit_softmax(X2, y2, r2, l2=1.0)
    assert np.allclose(w0 / scale0, w1 / scale1, rtol=0.15, atol=0.05)
