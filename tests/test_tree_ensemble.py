"""core/tree_ensemble.py: LightGBM's trees evaluated in numpy, and compiled
(core/quickscorer.c), give LightGBM's own doubles, bit for bit, and what it cannot
evaluate exactly is left to LightGBM."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightgbm
import numpy as np
import pytest

from core import tree_ensemble
from core.scoring import FEATURES, TreeScorer
from core.tree_ensemble import TreeEnsemble, Unsupported, threshold_probes
from tests.test_tree_scorer import xor_requests
from training.params import ScorerParams
from training.scorer import evaluation_matches_lightgbm, fit_scorer

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


def test_the_compiled_kernel_was_built():
    # make install builds it (pyproject.toml's optional extension): on a machine with a
    # C compiler, its absence is a broken build, not a fallback to accept silently.
    assert tree_ensemble.KERNEL is not None
    booster, _ = fitted(7, rounds=3)
    assert TreeEnsemble(booster.model_to_string(), D).kernel == "c"
    assert TreeEnsemble(booster.model_to_string(), D, compiled=False).kernel == "numpy"


def test_a_build_of_another_signature_is_refused(tmp_path, monkeypatch):
    """A stale core._quickscorer (built before an edit changed qs_score) must not be
    called with today's arguments: its qs_abi() differs, and numpy scores instead."""

    def built(abi: int):
        src = tmp_path / f"abi{abi}.c"
        src.write_text(f"#include <stdint.h>\nint64_t qs_abi(void) {{ return {abi}; }}\nvoid qs_score(void) {{}}\n")
        lib = tmp_path / f"abi{abi}.so"
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
        return SimpleNamespace(origin=str(lib))

    for abi, loads in ((tree_ensemble.KERNEL_ABI + 1, False), (tree_ensemble.KERNEL_ABI, True)):
        spec = built(abi)
        monkeypatch.setattr(tree_ensemble.importlib.util, "find_spec", lambda name, spec=spec: spec)
        assert (tree_ensemble.load_kernel() is not None) is loads


KERNELS = [pytest.param(True, id="compiled"), pytest.param(False, id="numpy")]


@pytest.mark.parametrize("compiled", KERNELS)
@pytest.mark.parametrize("leaves", [2, 7, 15, 31, 63])  # lanes of 8, 8, 16, 32 and 64 bits
def test_the_same_doubles_as_lightgbm_for_every_lane_width(leaves, compiled):
    booster, X = fitted(leaves)
    ensemble = TreeEnsemble(booster.model_to_string(), D, compiled=compiled)
    rows = np.concatenate([X[:1000], hard_rows(ensemble)])
    expected = booster.predict(rows.astype(np.float64), num_threads=1)
    assert np.array_equal(ensemble.score(rows), expected)  # float32 in, as the service scores
    assert np.array_equal(ensemble.score(rows.astype(np.float64)), expected)
    assert len(np.unique(expected)) > leaves  # rows really reach different leaves
    # The compiled kernel counts short threshold lists directly and binary-searches long
    # ones down to a short window first (core/quickscorer.c): from 15 leaves up both run.
    assert leaves < 15 or max(len(t) for t in ensemble.thresholds32) > 64


def test_the_compiled_kernel_reads_strided_rows_and_scores_on_several_threads_at_once():
    booster, X = fitted(15, rounds=30)
    ensemble = TreeEnsemble(booster.model_to_string(), D)
    wide = np.zeros((len(X), D + 3), np.float32)
    wide[:, 2 : 2 + D] = X  # rows whose stride is not D: a view into a wider matrix
    expected = booster.predict(X.astype(np.float64), num_threads=1)
    assert np.array_equal(ensemble.score(wide[:, 2 : 2 + D]), expected)
    assert np.array_equal(ensemble.score(X[::-1]), expected[::-1])  # a negative row stride
    results: dict[int, bool] = {}

    def score_again(i: int) -> None:  # the GIL is released in the kernel: calls overlap
        results[i] = all(np.array_equal(ensemble.score(X[i::4]), expected[i::4]) for _ in range(50))

    threads = [threading.Thread(target=score_again, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: True, 1: True, 2: True, 3: True}


@pytest.mark.parametrize("compiled", KERNELS)
def test_no_row_one_row_more_than_a_chunk_and_single_leaf_trees(monkeypatch, compiled):
    # min_data_in_leaf above the rows per request: every tree is one leaf, a constant
    booster, X = fitted(15, rounds=5, min_data_in_leaf=10_000)
    ensemble = TreeEnsemble(booster.model_to_string(), D, compiled=compiled)
    assert ensemble.used.size == 0
    assert np.array_equal(ensemble.score(X[:50]), booster.predict(X[:50].astype(np.float64), num_threads=1))
    booster, X = fitted(15)
    ensemble = TreeEnsemble(booster.model_to_string(), D, compiled=compiled)
    for rows in (X[:0], X[:1], X[:1].astype(np.float64)):  # no candidate left, and one
        assert np.array_equal(ensemble.score(rows), booster.predict(rows.astype(np.float64), num_threads=1))
    assert ensemble.score(X[:0]).shape == (0,)
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


def test_training_checks_the_evaluation_against_lightgbm_and_falls_back_to_it(monkeypatch):
    booster, X = fitted(15)
    scorer = TreeScorer(booster.model_to_string(), FEATURES[:D])
    assert scorer.evaluator == "c"
    assert evaluation_matches_lightgbm(scorer, booster, X)
    other, _ = fitted(7)  # a check that can fail: another model's predict differs
    assert not evaluation_matches_lightgbm(scorer, other, X)
    # Both kernels are checked: a server without the compiled one scores in numpy.
    numpy_kernel = scorer.ensemble._score_numpy
    monkeypatch.setattr(scorer.ensemble, "_score_numpy", lambda rows: numpy_kernel(rows) + 1e-12)
    assert not evaluation_matches_lightgbm(scorer, booster, X)
    monkeypatch.undo()
    # Marked by training, LightGBM's predict scores the trees, to the same doubles.
    marked = TreeScorer(booster.model_to_string(), FEATURES[:D], info={"evaluator": "lightgbm"})
    assert marked.evaluator == "lightgbm" and marked.ensemble is None
    rows = np.random.default_rng(2).normal(size=(300, len(FEATURES))).astype(np.float32)
    assert np.array_equal(marked.score(rows), scorer.score(rows))


def test_a_process_serving_a_blend_never_imports_lightgbm(tmp_path):
    """LightGBM costs a worker ~18 MB of private memory; the service scores the trees
    without it (training fitted and checked them with it)."""
    X, y, requests = xor_requests(4, n_requests=60)
    blend = fit_scorer(X, y, requests, ScorerParams(objective="blend"), {})
    assert blend.trees.evaluator == "c" and "evaluator" not in blend.trees.info
    path = tmp_path / "scorer.json"
    path.write_text(blend.to_json())
    script = (
        "import sys, numpy as np; from core.scoring import load_scorer, FEATURES; "
        f"s = load_scorer(open({str(path)!r}).read()); "
        "v = s.score(np.zeros((3, len(FEATURES)), np.float32)); "
        "print(s.trees.evaluator, 'lightgbm' in sys.modules, bool(np.isfinite(v).all()))"
    )
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.split() == ["c", "False", "True"]
