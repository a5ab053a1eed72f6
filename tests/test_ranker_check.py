"""make ranker-check: other rankers fitted leave-one-point-out on the pipeline's own
captured candidates, the bundle's scorer reproducing the report exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core import contract
from core.scoring import FEATURES, LinearScorer
from training import candidate_capture, ranker_check
from training.params import EvalParams, TrainParams
from training.train import train


def table(users, posts, y, req_users, n_targets, scores=None, ease=None):
    n = len(users)
    X = np.zeros((n, len(FEATURES)), np.float32)
    if scores is not None:
        X[:, FEATURES.index("affinity")] = scores
    return {
        "users": np.asarray(users, np.int64),
        "posts": np.asarray(posts, np.int64),
        "X": X,
        "y": np.asarray(y, np.float32),
        "ease": np.asarray(ease if ease is not None else np.zeros(n), np.float32),
        "req_users": np.asarray(req_users, np.int64),
        "n_targets": np.asarray(n_targets, np.int64),
        "split_ts": np.int64(0),
        "scorer": np.array(LinearScorer.affinity_only().to_json()),
    }


def test_ndcg10_has_the_textbook_values_and_breaks_ties_by_row():
    # user 1: its one target ranked 2nd of 3 -> 1/log2(3); user 2: targets at places 1 and
    # 3 of 2 targets -> (1 + 1/2) / (1 + 1/log2(3)); user 3 has a target but no candidate.
    t = table(
        users=[1, 1, 1, 2, 2, 2],
        posts=[10, 11, 12, 20, 21, 22],
        y=[0, 1, 0, 1, 0, 1],
        req_users=[1, 2, 3],
        n_targets=[1, 2, 1],
    )
    scores = np.array([3.0, 2.0, 1.0, 5.0, 5.0, 4.0])  # 20 and 21 tie: row 20 first
    got = ranker_check.ndcg10(t, scores)
    np.testing.assert_allclose(got, [1 / np.log2(3), 1.5 / (1 + 1 / np.log2(3)), 0.0])


def test_ease_features_rank_the_items_outside_it_after_every_item_inside():
    t = table(
        users=[1, 1, 1, 1], posts=[1, 2, 3, 4], y=[0] * 4, req_users=[1], n_targets=[1], ease=[0.5, -1e9, 2.0, -1e9]
    )
    X = ranker_check.with_ease(t)
    assert X.shape == (4, len(FEATURES) + 2)
    np.testing.assert_array_equal(X[:, -2], [0.5, 0.0, 2.0, 0.0])
    np.testing.assert_allclose(X[:, -1], np.log1p([1, 2, 0, 2]))


def test_one_split_point_is_refused_with_a_clear_message():
    t = table(users=[1], posts=[1], y=[1], req_users=[1], n_targets=[1])
    with pytest.raises(ValueError, match="1 split point: leave-one-point-out needs at least two"):
        ranker_check.check([t])


def test_the_capture_is_the_evaluation_and_the_scorer_row_is_the_reports_pipeline(tiny_data, tmp_path):
    """Two split points: each point's captured requests are the evaluated users, and the
    bundle's scorer over the captured features scores exactly the report's pooled
    pipeline NDCG@10; every other ranker is fitted and judged on the same users."""
    params = TrainParams(test_fraction=0.5, eval=EvalParams(split_points=2))
    bundle = train(tiny_data, tmp_path / "models", params, progress=False, quiet=True)
    report = ranker_check.run(bundle, None, tmp_path / "capture")
    tables = candidate_capture.read(tmp_path / "capture")
    saved = json.loads((bundle / contract.REPORT_JSON_FILE).read_text())
    users = np.load(bundle / contract.EVAL_USERS_FILE)
    assert [int(t["split_ts"]) for t in tables] == saved["protocol"]["split_points"]
    for t, row in zip(tables, users):
        np.testing.assert_array_equal(t["req_users"], row[row >= 0])
        assert t["X"].shape == (len(t["users"]), len(FEATURES)) and t["y"].sum() > 0
    longest = [p for p in saved["pooled"] if p["window"]["days"] == max(saved["protocol"]["windows_days"])][0]
    pipeline = longest["methods"]["pipeline"]["ndcg@10"]["mean"]
    assert report["methods"]["scorer"]["mean"] == pytest.approx(pipeline, abs=1e-12)
    assert report["users"] == longest["window"]["users"]
    assert set(report["methods"]) == set(ranker_check.METHODS)
    for name, row in report["methods"].items():
        lo, hi = row["ci95"]
        assert 0.0 <= lo <= row["mean"] <= hi <= 1.0, (name, row)
        assert len(row["per_point"]) == 2
    text = ranker_check.markdown(report)
    assert text.count("\n| ") == 1 + len(ranker_check.METHODS)  # the header and one row per ranker


def test_the_command_refuses_a_bundle_judged_at_one_split_point_before_replaying_it(learned_bundle, capsys):
    from training.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["ranker-check", "--models", str(learned_bundle.parent)])
    assert str(exit_.value) == (
        f"error: {learned_bundle}: 1 split point: leave-one-point-out needs at least two "
        "(train with --split-points 2 or more)"
    )
    assert "replaying" in capsys.readouterr().out
