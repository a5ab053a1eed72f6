"""core.scoring: the request-relative features, and scorers saved before a feature existed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.scoring import FEATURES, FeatureInputs, LinearScorer, feature_matrix

HOT = FEATURES.index("hot")
HOT_MINE = FEATURES.index("hot_in_my_communities")
HOT_VS_BEST = FEATURES.index("hot_vs_best")
MINE_VS_BEST = FEATURES.index("hot_in_my_communities_vs_best")
NEWEST_RANK = FEATURES.index("newest_rank_in_my_communities")
HOT_RANK = FEATURES.index("hot_rank_in_my_communities")
SINCE_ACTIVE = FEATURES.index("log_hours_since_active")


def inputs(hot, weight, age_hours=None, active_hours=None) -> FeatureInputs:
    n = len(hot)
    zeros = np.zeros(n, np.float32)
    return FeatureInputs(
        affinity=zeros,
        community_affinity=zeros,
        user_role=np.zeros(n, np.uint8),
        author_trust=zeros,
        age_seconds=np.full(n, 3600.0) if age_hours is None else 3600.0 * np.asarray(age_hours, np.float64),
        positives=zeros,
        negatives=zeros,
        views=zeros,
        community_size=np.full(n, 10.0, np.float32),
        hot=np.asarray(hot, np.float32),
        community_weight=np.asarray(weight, np.float32),
        co_engagement=zeros,
        author_tie=zeros,
        active_age_seconds=np.full(n, 3600.0)
        if active_hours is None
        else 3600.0 * np.asarray(active_hours, np.float64),
    )


def test_relative_features_are_the_gap_to_the_requests_best():
    X = feature_matrix(inputs([0.0, 3.0, 1.0], [1.0, 0.0, 2.0]))  # one request: the service's call
    assert np.allclose(X[:, HOT_VS_BEST], np.log1p([0.0, 3.0, 1.0]) - np.log1p(3.0))
    mine = np.log1p(np.array([0.0, 3.0, 1.0]) * np.array([1.0, 0.0, 2.0]))
    assert np.allclose(X[:, HOT_MINE], mine)
    assert np.allclose(X[:, MINE_VS_BEST], mine - mine.max())
    assert X[2, MINE_VS_BEST] == 0.0  # the hottest in my communities is post 2, not the hottest overall


def test_each_request_is_relative_to_its_own_candidates_only():
    hot, weight = [1.0, 7.0, 2.0, 0.5], [1.0, 1.0, 1.0, 1.0]
    together = feature_matrix(inputs(hot, weight), requests=np.array([5, 9, 5, 9]))
    first, second = feature_matrix(inputs(hot[0::2], weight[0::2])), feature_matrix(inputs(hot[1::2], weight[1::2]))
    assert np.array_equal(together[0::2], first)
    assert np.array_equal(together[1::2], second)
    assert together[2, HOT_VS_BEST] == 0.0 and together[1, HOT_VS_BEST] == 0.0


def test_rank_features_are_the_newest_and_hot_feeds_orders():
    # Posts 0-2 are in the user's communities (ages 5, 1, 1 h); 3 and 4 are not (0.5 h).
    hot, weight, age = [4.0, 1.0, 2.0, 9.0, 0.0], [1.0, 2.0, 1.0, 0.0, 0.0], [5.0, 1.0, 1.0, 0.5, 0.5]
    X = feature_matrix(inputs(hot, weight, age))
    # Newest in my groups: 1 and 2 tie first, 0 after both; outsiders after all three,
    # however fresh.
    assert np.allclose(X[:, NEWEST_RANK], np.log1p([2, 0, 0, 3, 3]))
    # Hot in my groups (hot x weight: 4, 2, 2, 0, 0): 0 first, 1 and 2 tie, outsiders last.
    assert np.allclose(X[:, HOT_RANK], np.log1p([0, 1, 1, 3, 3]))


def test_time_since_last_activity_is_not_the_posts_age():
    # Post 0 is the oldest (500 h) but was answered an hour ago; post 1 has had no
    # activity since its creation 10 h ago, and reads as its age would.
    X = feature_matrix(inputs([1.0, 0.0], [1.0, 1.0], age_hours=[500.0, 10.0], active_hours=[1.0, 10.0]))
    assert np.allclose(X[:, SINCE_ACTIVE], np.log1p([1.0, 10.0]))
    assert X[0, SINCE_ACTIVE] < X[1, SINCE_ACTIVE] < X[0, FEATURES.index("log_age_hours")]
    assert X[1, SINCE_ACTIVE] == X[1, FEATURES.index("log_age_hours")]


def test_ranks_are_taken_within_each_request_whatever_the_row_order():
    hot, weight, age = [4.0, 1.0, 2.0, 9.0, 0.0, 3.0], [1.0, 2.0, 1.0, 0.0, 0.0, 1.0], [5.0, 1.0, 1.0, 0.5, 0.5, 2.0]
    requests = np.array([7, 3, 7, 3, 7, 3])
    together = feature_matrix(inputs(hot, weight, age), requests=requests)
    order = np.random.default_rng(3).permutation(6)
    shuffled = feature_matrix(
        inputs(np.take(hot, order), np.take(weight, order), np.take(age, order)), requests=requests[order]
    )
    assert np.array_equal(shuffled, together[order])
    alone = feature_matrix(inputs(hot[0::2], weight[0::2], age[0::2]))
    assert np.array_equal(together[0::2], alone)


def test_empty_request():
    assert feature_matrix(inputs([], [])).shape == (0, len(FEATURES))


def test_a_scorer_saved_before_a_feature_existed_weighs_it_zero():
    older = [f for f in FEATURES if f not in ("hot_vs_best", "hot_in_my_communities_vs_best")]
    w = np.arange(1, len(older) + 1, dtype=np.float32)
    text = json.dumps(
        {
            "kind": "logistic",
            "features": older,
            "weights": w.tolist(),
            "mean": [0.5] * len(older),
            "scale": [2.0] * len(older),
            "bias": 0.25,
        }
    )
    scorer = LinearScorer.from_json(text)
    X = np.random.default_rng(1).normal(size=(6, len(FEATURES))).astype(np.float32)
    cols = [FEATURES.index(f) for f in older]
    assert np.allclose(scorer.score(X), ((X[:, cols] - 0.5) / 2.0) @ w + 0.25, atol=1e-5)
    assert scorer.weights[HOT_VS_BEST] == 0.0 and scorer.weights[MINE_VS_BEST] == 0.0


@pytest.mark.parametrize(
    "features",
    [["affinity", "no_such_feature"], ["affinity", "affinity"], "affinity"],
    ids=["unknown", "twice", "not a list"],
)
def test_a_scorer_naming_features_this_service_lacks_is_refused(features):
    n = len(features) if isinstance(features, list) else 1
    text = json.dumps({"features": features, "weights": [1.0] * n, "mean": [0.0] * n, "scale": [1.0] * n})
    with pytest.raises(ValueError, match="scorer features"):
        LinearScorer.from_json(text)
