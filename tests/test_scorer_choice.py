"""--scorer-objective auto (the default): the trees or the blend only where they rank
the inner windows' candidates better beyond noise (training/scorer_choice.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core import contract
from core.bundle import load_bundle
from core.scoring import FEATURES, BlendScorer, LinearScorer, TreeScorer
from training.params import EvalParams, ScorerParams, TrainParams
from training.reevaluate import reevaluate
from training.scorer import fit_scorer
from training.scorer_choice import choose_objective, describe, objective_of, request_ndcg10
from training.train import train

A, B = FEATURES.index("hot"), FEATURES.index("freshness")
ONE_DOWN = 1.0 / np.log2(3.0)  # the gain of a hit in second place


def test_ndcg_of_each_request_ranks_by_score_and_breaks_ties_by_post_row():
    requests = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3])
    y = np.array([0, 1, 0, 1, 1, 0, 0, 1, 0], dtype=float)
    scores = np.array([3, 2, 1, 5, 5, 1, 2, 7, 7], dtype=float)
    posts = np.array([1, 2, 3, 5, 4, 1, 2, 9, 2])
    got = request_ndcg10(requests, y, scores, posts)
    # 0: the hit second of three; 1: both rows hits; 2: no hit (nothing to judge);
    # 3: a tie, post 2 (not engaged) goes first, as the service breaks ties
    np.testing.assert_allclose(got[[0, 1, 3]], [ONE_DOWN, 1.0, ONE_DOWN])
    assert np.isnan(got[2])


def test_ndcg_counts_the_top_ten_only():
    requests = np.zeros(12, dtype=int)
    y = np.zeros(12)
    y[10] = 1.0  # the one hit ranked eleventh
    assert request_ndcg10(requests, y, -np.arange(12.0), np.arange(12))[0] == 0.0


def candidates(seed: int, signal, n_requests: int = 480, per_request: int = 30, windows: int = 8):
    """Requests over `windows` weekly windows (each its own posts), whose engaged
    candidate is the one with the largest `signal(X)`: (X, y, requests, posts, ages, keep)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_requests * per_request, len(FEATURES))).astype(np.float32)
    X[:, FEATURES.index("negative_rate")] = 0.0
    requests = np.repeat(np.arange(n_requests), per_request)
    s = signal(X) + rng.normal(size=len(X)) * 0.3
    y = np.zeros(len(X))
    y[np.arange(n_requests) * per_request + s.reshape(n_requests, per_request).argmax(axis=1)] = 1.0
    posts = np.arange(len(X))
    ages = requests % windows
    return X, y, requests, posts, ages, np.arange(len(X))


def test_the_trees_are_chosen_where_they_take_an_interaction_a_linear_score_cannot():
    objective, info = choose_objective(*candidates(1, lambda X: X[:, A] * X[:, B]), ScorerParams())
    assert objective == "lambdarank" and info["chosen"] == "lambdarank"
    assert info["verdict"] == "better, beyond noise" and info["ci95"][0] > 0
    # 8 windows in 4 blocks: the three later blocks are judged, 6 windows of 60 requests
    assert (info["windows"], info["blocks"], info["requests"]) == (8, 4, 360)


def test_the_blend_is_chosen_where_a_linear_signal_and_an_interaction_both_count():
    """Six features add up linearly and two interact: the trees alone take the
    interaction but fit the sum coarsely, the softmax the reverse; the blend keeps both."""
    linear = [FEATURES.index(f) for f in ("affinity", "community_affinity", "author_trust", "engagement_rate")]
    linear += [FEATURES.index(f) for f in ("co_engagement", "author_tie")]
    signal = lambda X: 0.5 * X[:, linear].sum(axis=1) + 0.4 * X[:, A] * X[:, B]  # noqa: E731
    objective, info = choose_objective(*candidates(1, signal, n_requests=960), ScorerParams())
    assert objective == "blend" and info["chosen"] == "blend"
    assert info["blend_verdict"] == "better, beyond noise" and info["blend_ci95"][0] > 0
    assert info["verdict"] != "better, beyond noise"  # the trees alone: not beyond noise
    assert info["ndcg10_blend"] > info["ndcg10_lambdarank"] > info["ndcg10_softmax"]
    assert "blend 0." in describe(info) and describe(info).startswith("blend, chosen")


def test_of_two_challengers_beyond_noise_the_larger_gain_is_served():
    # The pure interaction: both beat the softmax beyond noise, the trees by more.
    _, info = choose_objective(*candidates(1, lambda X: X[:, A] * X[:, B]), ScorerParams())
    assert info["blend_ci95"][0] > 0 and info["ci95"][0] > 0
    assert info["lambdarank_minus_softmax"] > info["blend_minus_softmax"] and info["chosen"] == "lambdarank"


def test_a_choice_recorded_before_the_blend_was_a_candidate_still_reads():
    old = {
        "chosen": "lambdarank",
        "blocks": 4,
        "windows": 12,
        "requests": 1287,
        "ndcg10_softmax": 0.3816,
        "ndcg10_lambdarank": 0.3966,
        "lambdarank_minus_softmax": 0.015,
        "ci95": [0.002, 0.028],
        "verdict": "better, beyond noise",
    }
    line = describe(old)
    assert "lambdarank 0.3966 (+0.0150 [+0.0020, +0.0280] better, beyond noise)" in line and "blend" not in line


def test_the_linear_scorer_stays_where_the_trees_gain_nothing():
    objective, info = choose_objective(*candidates(2, lambda X: X[:, A] + 0.5 * X[:, B]), ScorerParams())
    assert objective == "softmax" and info["verdict"] != "better, beyond noise"
    assert info["blend_verdict"] != "better, beyond noise"
    assert info["ndcg10_softmax"] >= info["ndcg10_lambdarank"] - 0.02


def test_a_weeks_hit_recognised_by_its_features_is_not_taken_for_a_ranking_skill():
    """Each week every user engages with that week's one hit post, and every request of
    the week holds the same 30 posts: trees fitted on some of a week's requests would
    recognise the hit in the others by its features. Judged on later weeks, whose hits
    are other posts, nothing was learned, and the linear scorer stays."""
    rng = np.random.default_rng(4)
    windows, per_week, per_request = 8, 60, 30
    rows, ys, reqs, posts, ages = [], [], [], [], []
    for w in range(windows):
        week = rng.normal(size=(per_request, len(FEATURES))).astype(np.float32)
        week[:, FEATURES.index("negative_rate")] = 0.0
        hit = rng.integers(per_request)
        for r in range(per_week):
            rows.append(week)
            ys.append(np.arange(per_request) == hit)
            reqs.append(np.full(per_request, w * per_week + r))
            posts.append(w * per_request + np.arange(per_request))
            ages.append(np.full(per_request, w))
    X = np.concatenate(rows)
    objective, info = choose_objective(
        X,
        np.concatenate(ys).astype(float),
        np.concatenate(reqs),
        np.concatenate(posts),
        np.concatenate(ages),
        np.arange(len(X)),
        ScorerParams(),
    )
    assert objective == "softmax" and info["verdict"] != "better, beyond noise"
    assert info["blend_verdict"] != "better, beyond noise"


def test_one_window_leaves_nothing_later_to_judge_on_and_keeps_the_linear_scorer():
    X, y, requests, posts, _, keep = candidates(5, lambda X: X[:, A] * X[:, B], windows=1)
    objective, info = choose_objective(X, y, requests, posts, np.zeros(len(y), int), keep, ScorerParams())
    assert objective == "softmax" and "one inner window" in info["why"] and "ci95" not in info


def test_only_the_sampled_rows_are_learned_from_but_every_candidate_is_ranked():
    X, y, requests, posts, ages, _ = candidates(3, lambda X: X[:, A] * X[:, B])
    # Learn from the positives and 5 negatives a request: the judged NDCG is over all 30.
    keep = np.flatnonzero((y > 0) | (np.arange(len(y)) % 30 < 5))
    _, few = choose_objective(X, y, requests, posts, ages, keep, ScorerParams())
    _, every = choose_objective(X, y, requests, posts, ages, np.arange(len(y)), ScorerParams())
    assert few["requests"] == every["requests"] == 360
    assert few["ndcg10_lambdarank"] != every["ndcg10_lambdarank"]


@pytest.mark.parametrize(
    "scorer, objective",
    [
        (LinearScorer.affinity_only(), "softmax"),
        (LinearScorer(np.ones(1), np.zeros(1), np.ones(1), info={"objective": "logistic"}), "logistic"),
    ],
)
def test_a_refit_reuses_the_shipped_scorers_objective(scorer, objective):
    assert objective_of(scorer) == objective


def test_a_refit_of_a_blend_is_a_blend():
    X, y, requests, *_ = candidates(6, lambda X: X[:, A] * X[:, B], n_requests=60)
    blend = fit_scorer(X, y, requests, ScorerParams(objective="blend"), {})
    assert isinstance(blend, BlendScorer) and objective_of(blend) == "blend"


def test_an_auto_bundle_records_its_choice_and_is_recomputed_exactly(tiny_data, tmp_path):
    params = TrainParams(test_fraction=0.5, scorer_fit=ScorerParams(objective="auto"), eval=EvalParams(split_points=2))
    bundle = train(tiny_data, tmp_path / "models", params, progress=False, quiet=True)
    loaded = load_bundle(bundle)
    choice = loaded.scorer.info["objective_choice"]
    assert choice["chosen"] == objective_of(loaded.scorer)
    assert isinstance(loaded.scorer, TreeScorer) == (choice["chosen"] == "lambdarank")
    assert isinstance(loaded.scorer, BlendScorer) == (choice["chosen"] == "blend")
    report = json.loads((bundle / contract.REPORT_JSON_FILE).read_text())
    assert report["training"]["scorer"]["objective_choice"] == choice
    line = f"- scorer_objective: {describe(choice)}"
    assert line in (bundle / contract.REPORT_MD_FILE).read_text().splitlines()
    # The later point's scorer is refitted with the first point's choice, as training did.
    assert reevaluate(bundle)[1] == []
