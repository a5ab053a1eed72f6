"""nichefeed_model_scorer_info: which scorer serves and what evaluates its trees, so that an
SRE sees a worker scoring trees in numpy (an install without the compiled kernel)."""

from __future__ import annotations

import numpy as np
from prometheus_client import REGISTRY

from core.scoring import FEATURES, BlendScorer, LinearScorer, TreeScorer, tree_evaluator
from service.metrics import METRICS
from tests.test_tree_ensemble import fitted


def scorer_value(scorer: str, trees: str) -> float | None:
    return REGISTRY.get_sample_value("nichefeed_model_scorer_info", {"scorer": scorer, "trees": trees})


def test_each_scorer_names_what_scores_its_trees():
    booster, _ = fitted(15, rounds=3)
    trees = TreeScorer(booster.model_to_string(), FEATURES[:6])
    linear = LinearScorer.affinity_only()
    assert tree_evaluator(linear) == "none"
    assert tree_evaluator(trees) == "c"
    assert tree_evaluator(BlendScorer(linear, trees)) == "c"
    marked = TreeScorer(booster.model_to_string(), FEATURES[:6], info={"evaluator": "lightgbm"})
    assert tree_evaluator(BlendScorer(linear, marked)) == "lightgbm"
    rows = np.zeros((2, len(FEATURES)), np.float32)
    assert np.array_equal(trees.score(rows), marked.score(rows))


def test_the_gauge_follows_the_serving_model_and_forgets_the_last_one():
    kept = METRICS._scorer_labels  # a service of an earlier test may have set it
    try:
        METRICS.set_model("scorer-test-1", "2026-11-28T00:00:00Z", 10, None, ("blend", "numpy"))
        assert scorer_value("blend", "numpy") == 1
        METRICS.set_model("scorer-test-2", "2026-11-28T00:00:00Z", 10, "scorer-test-1", ("softmax", "none"))
        assert scorer_value("softmax", "none") == 1
        assert scorer_value("blend", "numpy") is None  # removed, not left at 1 beside the new one
        METRICS.set_model("scorer-test-3", "2026-11-28T00:00:00Z", 10, "scorer-test-2", ("softmax", "none"))
        assert scorer_value("softmax", "none") == 1  # the same scorer again: still 1
    finally:
        for version in ("scorer-test-1", "scorer-test-2", "scorer-test-3"):
            if REGISTRY.get_sample_value("nichefeed_model_info", {"version": version}) is not None:
                METRICS.model_info.remove(version)
        METRICS.model_scorer.remove("softmax", "none")
        METRICS._scorer_labels = None
        if kept is not None:
            METRICS.model_scorer.labels(*kept).set(1)
            METRICS._scorer_labels = kept
