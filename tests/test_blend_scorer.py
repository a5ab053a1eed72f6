"""The blended scorer (--scorer-objective blend, the default): the softmax and the
lambdarank trees, each divided by its scores' spread over the rows it was fitted on, and
averaged. Training scores many requests in one call and the service one: a row's score
must not depend on the rows beside it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.scoring import FEATURES, BlendScorer, LinearScorer, TreeScorer, load_scorer
from tests.test_tree_scorer import xor_requests
from training.params import ScorerParams
from training.scorer import MAX_WEIGHT, fit_scorer


@pytest.fixture(scope="module")
def fitted():
    X, y, requests = xor_requests(1, n_requests=120)
    return X, y, requests, fit_scorer(X, y, requests, ScorerParams(objective="blend"), {"windows": [[0, 120]]})


def test_the_blend_is_its_two_parts_fitted_alone_each_over_its_spread_at_the_fit(fitted):
    X, y, requests, blend = fitted
    assert isinstance(blend, BlendScorer) and blend.kind == "blend"
    softmax = fit_scorer(X, y, requests, ScorerParams(objective="softmax"), {})
    trees = fit_scorer(X, y, requests, ScorerParams(objective="lambdarank"), {})
    np.testing.assert_array_equal(blend.linear.score(X), softmax.score(X))
    np.testing.assert_array_equal(blend.trees.score(X), trees.score(X))
    a, b = softmax.score(X).astype(np.float64), trees.score(X)
    # the scales: each part's spread over the rows the blend was fitted on
    np.testing.assert_allclose(blend.scales, (a.std(), b.std()), rtol=1e-12)
    rows = X[:20]
    by_hand = 0.5 * softmax.score(rows).astype(np.float64) / a.std() + 0.5 * trees.score(rows) / b.std()
    np.testing.assert_allclose(blend.score(rows), by_hand, rtol=1e-12, atol=1e-12)
    # what the report shows of it: both parts' weights, and the windows it learned from
    assert blend.info["objective"] == "blend" and blend.info["windows"] == [[0, 120]]
    assert set(blend.info["weights_by_feature"]) == set(blend.info["gain_share_by_feature"])


def test_a_rows_score_does_not_depend_on_the_rows_beside_it(fitted):
    """Training's evaluation scores every user's candidates in one call; the service one
    request, sometimes of one candidate (candidate_post_ids)."""
    X, _, _, blend = fitted
    together = blend.score(X[:200])
    alone = np.array([blend.score(X[i : i + 1])[0] for i in range(0, 200, 7)])
    # (to float32 rounding: the linear part's product is summed in another order for one row)
    np.testing.assert_allclose(together[::7], alone, rtol=1e-5, atol=1e-6)
    assert np.abs(alone).max() > 0  # a one-candidate request gets a real score


def test_more_hides_and_reports_never_raise_a_posts_blended_score():
    """The policy both parts hold (the linear weight's bound, the trees' monotone
    constraint) holds for their positive combination, row by row: here negatives come
    with the positives, as on busy posts, and would otherwise earn a positive weight."""
    X, y, requests = xor_requests(6, n_requests=120)
    neg = FEATURES.index("negative_rate")
    X[:, neg] = y * 2.0 + np.random.default_rng(0).normal(size=len(y)) * 0.1
    blend = fit_scorer(X, y, requests, ScorerParams(objective="blend"), {})
    assert blend.linear.weights[neg] <= MAX_WEIGHT["negative_rate"] + 1e-6
    rows = X[:300].copy()
    before = blend.score(rows)
    for step in (0.5, 1.0, 3.0):
        rows[:, neg] += step
        after = blend.score(rows)
        assert (after <= before + 1e-12).all() and (after < before).any()
        before = after


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
    assert isinstance(again, BlendScorer) and again.info == blend.info and again.scales == blend.scales
    np.testing.assert_array_equal(again.score(X[:60]), blend.score(X[:60]))
    raw = json.loads(blend.to_json())
    for damage, message in (
        (lambda r: r.pop("trees"), "needs its 'linear' and 'trees'"),
        (lambda r: r.pop("scales"), "needs its two 'scales'"),
        (lambda r: r.update(scales=[1.0, 0.0]), "scales must be two positive numbers"),
        (lambda r: r.update(scales=[1.0]), "scales must be two positive numbers"),
        (lambda r: r.update(scales=[1.0, None]), "scales must be two positive numbers"),
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


# A blend bundle trained, recomputed exactly and served over gRPC: tests/test_tree_scorer.py.
