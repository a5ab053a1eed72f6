"""core/tree_ensemble.py: LightGBM's trees evaluated in numpy give LightGBM's own doubles,
bit for bit, and what it cannot evaluate exactly is left to LightGBM."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightgbm
import numpy as np
import pytest

from core import tree_ensemble
from core.scoring import FEATURES, TreeScorer, exact_ensemble
from core.tree_ensemble import TreeEnsemble, Unsupported, threshold_probes

D = 6


def fitted(leaves: int, rounds: int = 20, X=None, **params) -> tuple[lightgbm.Booster, np.ndarray]:
    rng = np.random.default_rng(leaves)
    if X is None:
        X = rng.normal(size=(4000, D)).astype(np.float32)
    signal = np.nan_to_num(X[:, 0] + X[:, 1] * X[:, 2] - np.abs(X[:, 3]))
    y = (signal + rng.normal(size=len(X)) > 1.0).astype(np.float64)
    settings = {"objective": "lambdarank", "num_leaves": leaves, "min_data_in_leaf": 5, "verbose": -1, "seed": 0}
    settings.update(params)
    return lightgbm.train(settings, lightgbm.Dataset(X, y, group=[100] * (len(X) // 100)), rounds), X


def hard_rows(ensemble: TreeEnsemble, n: int = 3000) -> np.ndarray:
    """Values on and beside every threshold, zeros, NaN and infinities, in every column."""
    return threshold_probes(ensemble, D, rows=n, seed=1)


@pytest.mark.parametrize("leaves", [2, 7, 15, 31, 63])  # lanes of 8, 8, 16, 32 and 64 bits
def test_the_same_doubles_as_lightgbm_for_every_lane_width(leaves):
    booster, X = fitted(leaves)
    ensemble = TreeEnsemble(booster.model_to_string(), D)
    rows = np.concatenate([X[:1000], hard_rows(ensemble)])
    expected = booster.predict(rows.astype(np.float64), num_threads=1)
    assert np.array_equal(ensemble.score(rows), expected)  # float32 in, as the service scores
    assert np.array_equal(ensemble.score(rows.astype(np.float64)), expected)
    assert len(np.unique(expected)) > leaves  # rows really reach different leaves


def test_rows_beyond_one_chunk_and_single_leaf_trees(monkeypatch):
    # min_data_in_leaf above the rows per request: every tree is one leaf, a constant
    booster, X = fitted(15, rounds=5, min_data_in_leaf=10_000)
    ensemble = TreeEnsemble(booster.model_to_string(), D)
    assert ensemble.used.size == 0
    assert np.array_equal(ensemble.score(X[:50]), booster.predict(X[:50].astype(np.float64), num_threads=1))
    booster, X = fitted(15)
    ensemble = TreeEnsemble(booster.model_to_string(), D)
    monkeypatch.setattr(tree_ensemble, "CHUNK_ROWS", 64)
    assert np.array_equal(ensemble.score(X), booster.predict(X.astype(np.float64), num_threads=1))


def nan_model():
    X = np.random.default_rng(3).normal(size=(4000, D)).astype(np.float32)
    X[::5, 0] = np.nan  # LightGBM learns where missing values go: decision type "NaN"
    return fitted(15, X=X)[0]


@pytest.mark.parametrize(
    "booster, reason",
    [
        (lambda: nan_model(), "missing-value rule"),
        (lambda: fitted(15, zero_as_missing=True, use_missing=True)[0], "missing-value rule"),
        (lambda: fitted(80)[0], "at most 64"),
    ],
    ids=["nan-as-missing", "zero-as-missing", "80-leaves"],
)
def test_what_it_cannot_reproduce_is_refused_and_lightgbm_scores_it(booster, reason):
    model = booster().model_to_string()
    with pytest.raises(Unsupported, match=reason):
        TreeEnsemble(model, D)
    scorer = TreeScorer(model, FEATURES[:D])
    assert scorer.evaluator == "lightgbm"
    rows = np.random.default_rng(0).normal(size=(100, len(FEATURES))).astype(np.float32)
    rows[::3, 0] = np.nan
    expected = lightgbm.Booster(model_str=model).predict(rows[:, :D].astype(np.float64), num_threads=1)
    assert np.array_equal(scorer.score(rows), expected)


def test_categorical_splits_are_refused():
    X = np.random.default_rng(4).normal(size=(4000, D)).astype(np.float32)
    X[:, 4] = np.random.default_rng(5).integers(0, 12, len(X))
    y = (X[:, 4] % 3 == 0).astype(np.float64)  # only the category matters: the trees split on it
    settings = {"objective": "lambdarank", "num_leaves": 15, "min_data_per_group": 5, "verbose": -1, "seed": 0}
    data = lightgbm.Dataset(X, y, group=[100] * 40, categorical_feature=[4])
    booster = lightgbm.train(settings, data, 10)
    with pytest.raises(Unsupported, match="categorical"):
        TreeEnsemble(booster.model_to_string(), D)


def test_a_served_tree_scorer_uses_the_numpy_evaluation_only_if_it_agrees_on_the_probes():
    booster, _ = fitted(15)
    model = booster.model_to_string()
    scorer = TreeScorer(model, FEATURES[:D])
    assert scorer.evaluator == "numpy"
    # the evaluator is checked against the booster it stands for: another model's is refused
    other, _ = fitted(7)
    assert exact_ensemble(model, other) is None
    assert exact_ensemble(model, booster) is not None
