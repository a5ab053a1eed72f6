"""make compare: two bundles of the same data, paired per user, with the numbers each
bundle's own report holds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from core import contract
from training.compare import compare
from training.csvio import DataError


def pooled_metric(bundle, i: int) -> float:
    """The pipeline's NDCG@10 of the i-th evaluation window in the bundle's own report:
    pooled over the split points, or the one point's (whose window the data may cut short)."""
    report = json.loads((bundle / contract.REPORT_JSON_FILE).read_text())
    windows = report["pooled"] or [
        w for w in report["windows"] if w["window"]["split_ts"] == report["protocol"]["split_ts"]
    ]
    return windows[i]["methods"]["pipeline"]["ndcg@10"]["mean"]


def test_affinity_only_against_the_learned_scorer_paired(tiny_bundle, learned_bundle):
    results = compare(tiny_bundle, learned_bundle)
    assert [r.days for r in results] == json.loads((tiny_bundle / contract.MANIFEST_FILE).read_text())["params"][
        "eval"
    ]["windows_days"]
    for i, r in enumerate(results):
        # each side is exactly what that bundle's own report says, on the same users
        assert r.a == pytest.approx(pooled_metric(tiny_bundle, i), abs=1e-12)
        assert r.b == pytest.approx(pooled_metric(learned_bundle, i), abs=1e-12)
        assert r.difference == pytest.approx(r.b - r.a, abs=1e-12)
        assert r.ci95[0] <= r.difference <= r.ci95[1]
    longest = results[-1]
    assert longest.verdict == "B better, beyond noise"  # the learned scorer beats the inner product there


def test_a_bundle_against_itself_is_exactly_level(learned_bundle):
    for r in compare(learned_bundle, learned_bundle):
        assert r.difference == 0.0 and r.ci95 == (0.0, 0.0) and r.verdict == "within noise"


def test_bundles_of_different_data_are_not_paired(learned_bundle, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(learned_bundle, other)
    manifest = json.loads((other / contract.MANIFEST_FILE).read_text())
    manifest["data_fingerprint"] = "0" * 64
    (other / contract.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="different data"):
        compare(learned_bundle, other)


def test_bundles_that_evaluated_different_users_are_not_paired(learned_bundle, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(learned_bundle, other)
    users = np.load(other / contract.EVAL_USERS_FILE)
    np.save(other / contract.EVAL_USERS_FILE, users[..., ::-1].copy())
    with pytest.raises(DataError, match="different users"):
        compare(learned_bundle, other)
