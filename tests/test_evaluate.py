"""Evaluation: metrics with hand-computed answers, a report anyone can recompute from the
bundle, and catalogue-like logs where the ALS stage must match a direct implicit ALS."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from core import contract
from tests.catalogue_logs import write_catalogue_logs
from training.__main__ import print_outputs
from training.evaluate import (
    METHODS,
    bootstrap_ci,
    bootstrap_cis,
    closest_baseline,
    gate_point_count,
    per_user_metrics,
    power_note,
)
from training.gate import compare_on_candidate
from training.params import EvalParams, TrainParams
from training.reevaluate import numbers_differing, reevaluate
from training.train import train


class _Posts:
    post_community = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])


def test_metrics_have_the_textbook_values():
    # user 0: ranking [5, 3, 9], targets {3, 9}; user 1: ranking [1, 2, -1], target {7}
    rankings = np.array([[5, 3, 9], [1, 2, -1]], np.int32)
    targets = sp.csr_matrix((np.ones(3), ([0, 0, 1], [3, 9, 7])), shape=(2, 10))
    m = per_user_metrics(rankings, targets, np.array([0, 1]), _Posts, ks=(2, 3))
    assert m["recall@2"].tolist() == [0.5, 0.0]
    assert m["recall@3"].tolist() == [1.0, 0.0]
    ideal2 = 1 + 1 / np.log2(3)
    assert m["ndcg@2"][0] == pytest.approx((1 / np.log2(3)) / ideal2)
    assert m["ndcg@3"][0] == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / ideal2)
    assert m["ndcg@3"][1] == 0.0
    # communities of [5, 3, 9] are 2, 1, 4: three distinct in three; [1, 2] are 0, 1
    assert m["diversity@10"].tolist() == [1.0, 1.0]


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(1).random(500)
    a = bootstrap_ci(values, 400, np.random.default_rng(3))
    b = bootstrap_ci(values, 400, np.random.default_rng(3))
    assert a == b
    assert a[0] < values.mean() < a[1]
    assert a[1] - a[0] < 0.1


def test_bootstrap_interval_is_the_one_every_saved_report_was_computed_with():
    """The draws became int32 for speed; the intervals of reports written before must
    come out the same, to the last bit (the gate and make evaluate recompute them)."""
    for n, draws in ((1, 50), (77, 1000), (1726, 300)):
        values = np.random.default_rng(n).normal(size=n)
        idx = np.random.default_rng(9).integers(0, n, (draws, n))  # int64, as before
        before = tuple(float(q) for q in np.quantile(values[idx].mean(axis=1), [0.025, 0.975]))
        assert bootstrap_ci(values, draws, np.random.default_rng(9)) == before


def test_intervals_drawn_in_a_batch_are_those_drawn_one_by_one():
    """A report's intervals are drawn in one batch (the means on a second thread); from
    one generator they are the sequential calls' intervals, empty samples drawing nothing."""
    rng = np.random.default_rng(4)
    samples = [rng.normal(size=n) for n in (300, 0, 1, 2000, 0, 77, 500)]
    one_by_one = np.random.default_rng(12)
    expected = [bootstrap_ci(v, 200, one_by_one) for v in samples]
    assert bootstrap_cis(samples, 200, np.random.default_rng(12)) == expected
    assert expected[1] == expected[4] == (0.0, 0.0)


def test_report_is_recomputed_exactly_from_the_bundle(learned_bundle):
    report, mismatches = reevaluate(learned_bundle)
    assert mismatches == []
    saved = json.loads((learned_bundle / contract.REPORT_JSON_FILE).read_text())
    proto = saved["protocol"]
    assert proto["split_ts"] < proto["end_ts"]
    assert proto["ks"] == [10, 50]
    users = np.load(learned_bundle / contract.EVAL_USERS_FILE)  # [split points, max users], -1 padded
    assert len(users) == len(proto["split_points"])
    assert (users[0] >= 0).sum() == proto["users"] > 100
    rankings = np.load(learned_bundle / contract.EVAL_RANKINGS_FILE)
    assert rankings.shape == (len(users), len(METHODS), users.shape[1], 50)
    # every window of every split point is in the report; one point: the gate is its longest window
    assert len(saved["windows"]) == len(proto["split_points"]) * len(proto["windows_days"])
    assert gate_points_of(learned_bundle) == 1
    assert (
        saved["gate"]["value"]
        == saved["windows"][len(proto["windows_days"]) - 1]["methods"]["pipeline"]["ndcg@10"]["mean"]
    )


def gate_points_of(bundle) -> int:
    """Checks the report's gate points: from the first, pooled until max_users
    user-requests, every user of each judged; returns how many points it pooled."""
    saved = json.loads((bundle / contract.REPORT_JSON_FILE).read_text())
    proto, gate, per_point = saved["protocol"], saved["gate"], len(saved["protocol"]["windows_days"])
    counts = [int((u >= 0).sum()) for u in np.load(bundle / contract.EVAL_USERS_FILE)]
    n = gate_point_count(counts, proto["max_users"])
    assert gate["split_points"] == proto["split_points"][:n] and gate["users"] == sum(counts[:n])
    longest = [saved["windows"][j * per_point + per_point - 1] for j in range(n)]
    assert [w["window"]["users"] for w in longest] == counts[:n]
    return n


def test_the_gate_pools_points_until_enough_user_requests():
    """A busy log's first point is its gate alone; a sparse log's points are pooled until
    the requests of one full point, or all of them."""
    assert gate_point_count([2000, 2000], 2000) == 1
    assert gate_point_count([2, 5, 1993, 10], 2000) == 3
    assert gate_point_count([2, 0, 5], 2000) == 3
    assert gate_point_count([0, 3000], 2000) == 2
    assert gate_point_count([], 2000) == 1


def test_a_level_headline_says_how_small_a_difference_its_requests_could_tell_and_how_to_judge_more():
    """Within noise, the note gives the interval's half-width and the longer replay: every
    window of the hold-out when the replay stopped short of it, a larger hold-out when it
    judged them all; nothing when the verdict is beyond noise."""
    week = 7 * 86_400
    report = {
        "gate": {"metric": "ndcg@10"},
        "headline": {"split_ts": "all", "days": 7.0, "users": 92, "split_points": 16},
        "protocol": {"split_ts": 1000, "end_ts": 1000 + 147 * week + 5, "windows_days": [1.0, 7.0]},
        "pipeline_vs": {
            "ndcg@10": {
                "als_stage": {"difference": 0.3, "ci95": [-0.9, 0.5]},  # the pipeline's own part: never nearest
                "hot_global": {"difference": 0.04, "ci95": [0.01, 0.07]},
                "active_in_communities": {"difference": -0.016, "ci95": [-0.064, 0.028]},
            }
        },
    }
    report["protocol"]["split_points"] = [1000 + i * week for i in range(16)]
    assert power_note(report) == (
        "Within noise: 92 user-requests tell a difference from noise only beyond about \u00b10.046 (the "
        "interval's half-width). The hold-out spans 148 windows of 7 days and this replay judged 16: "
        "--split-points 148 replays them all; a larger --test-fraction holds out more."
    )
    report["protocol"]["split_points"] = [1000 + i * week for i in range(148)]
    assert power_note(report).endswith(
        "This replay judged every 7-day window of the hold-out (148): a larger --test-fraction holds out more "
        "of the log, and --split-points as many as its windows replays it all."
    )
    report["pipeline_vs"]["ndcg@10"]["active_in_communities"]["ci95"] = [0.002, 0.03]
    assert power_note(report) is None  # beyond noise against every baseline
    del report["headline"]
    assert power_note(report) is None  # a report saved before the headline was pooled


def test_the_later_points_scorer_is_refitted_and_an_older_bundle_is_recomputed_without(tiny_data, tmp_path, capsys):
    """Two split points: make evaluate refits the later point's scorer as training did
    (every number matches); read as a bundle from before the refit (its manifest without
    the field), the first point's windows still match and the later point's differ, so
    the refit is real and an older bundle re-evaluates as it was trained."""
    params = TrainParams(test_fraction=0.5, eval=EvalParams(split_points=2))
    bundle = train(tiny_data, tmp_path / "models", params, progress=False, quiet=True)
    manifest = json.loads((bundle / contract.MANIFEST_FILE).read_text())
    assert len(manifest["params"]["split_points"]) == 2 and manifest["params"]["eval"]["refit_scorer"] is True
    assert reevaluate(bundle)[1] == []
    # The first point judges fewer than --eval-users: the gate pools both. At the second the
    # report's pipeline was refitted, but the gate ranks the bundle as shipped (its first
    # point's vectors and scorer), as `make publish` ranks the serving bundle there; the
    # bundle against itself: the report's value, no difference.
    assert gate_points_of(bundle) == 2
    report = json.loads((bundle / contract.REPORT_JSON_FILE).read_text())
    # The headline (methods, pipeline_vs, the manifest's metrics) is the pooled 7 days.
    pooled = report["pooled"][-1]
    both = report["windows"][1]["window"]["users"] + report["windows"][3]["window"]["users"]
    assert report["headline"] == pooled["window"] == {"split_ts": "all", "days": 7.0, "users": both, "split_points": 2}
    assert (report["methods"], report["pipeline_vs"]) == (pooled["methods"], pooled["pipeline_vs"])
    assert report["protocol"]["users"] == report["windows"][1]["window"]["users"]  # the first split's
    assert manifest["metrics"]["pipeline/ndcg@10"] == pooled["methods"]["pipeline"]["ndcg@10"]["mean"]
    # make train's last lines: the headline's nearest baseline (by its interval's lower end,
    # als_stage being the pipeline's own part), then the gate.
    name, nearest = closest_baseline(report)
    lows = {n: v["ci95"][0] for n, v in report["pipeline_vs"]["ndcg@10"].items() if n != "als_stage"}
    assert nearest["ci95"][0] == min(lows.values()) == lows[name]
    capsys.readouterr()
    print_outputs(bundle)
    out = capsys.readouterr().out.rstrip("\n").split("\n")
    note = power_note(report)  # a last line only when the nearest baseline is within noise
    assert (out[-1] == note) if note else not out[-1].startswith("Within noise")
    *_, headline_line, answer, gate_line = out[:-1] if note else out
    assert headline_line.startswith("Headline (report.json's methods and pipeline_vs, the manifest's metrics): all 2")
    assert answer.startswith(f"  pipeline ndcg@10 {pooled['methods']['pipeline']['ndcg@10']['mean']:.4f}; ")
    assert f"the nearest baseline, {name}: {nearest['difference']:+.4f}" in answer and answer.endswith(
        nearest["verdict"]
    )
    assert (
        gate_line
        == f"Gate: the pipeline's ndcg@10 over the first 2 split points' pooled longest window, {report['gate']['users']} user-requests = {report['gate']['value']:.4f}."
    )
    markdown = (bundle / contract.REPORT_MD_FILE).read_text()
    assert (note in markdown.split("## ")[0]) if note else "Within noise" not in markdown  # above the tables
    sections = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert sections[:2] == ["## All 2 split points pooled, next 1 days", "## All 2 split points pooled, next 7 days"]
    assert sections[2].startswith("## Split at ")
    assert (
        "Headline (report.json's methods and pipeline_vs, the manifest's metrics): all 2 split points pooled, next 7 days."
        in markdown
    )
    first, second = (report["windows"][j * 2 + 1] for j in range(2))
    users = (first["window"]["users"], second["window"]["users"])
    refitted = (
        first["methods"]["pipeline"]["ndcg@10"]["mean"] * users[0]
        + second["methods"]["pipeline"]["ndcg@10"]["mean"] * users[1]
    ) / sum(users)
    assert report["gate"]["value"] != pytest.approx(refitted, abs=1e-9)
    same = compare_on_candidate(bundle, bundle)
    assert (same.points, same.users) == (2, report["gate"]["users"])
    assert same.candidate == pytest.approx(report["gate"]["value"], abs=1e-12) == same.serving
    assert same.ci95 == (0.0, 0.0)
    # A report saved before the gate pooled points had its first point's value alone, and
    # make evaluate recomputes it so.
    old = {**report, "gate": {"metric": "ndcg@10", "value": first["methods"]["pipeline"]["ndcg@10"]["mean"]}}
    assert numbers_differing(old, report) == [] and numbers_differing(report, report) == []
    assert numbers_differing(old | {"gate": report["gate"]}, old)  # a new report against an old rule differs
    del manifest["params"]["eval"]["refit_scorer"]
    (bundle / contract.MANIFEST_FILE).write_text(json.dumps(manifest))
    _, mismatches = reevaluate(bundle)
    first = tuple(f"windows/{i}/" for i in range(len(params.eval.windows_days)))
    assert mismatches and not [m for m in mismatches if m.startswith(first)], mismatches


def test_catalogue_like_logs_train_and_the_pipeline_is_level_with_tuned_plain_als(tmp_path):
    """MovieLens-like: genres as communities, created_at 0, play counts, no memberships."""
    data = write_catalogue_logs(tmp_path / "logs", users=800, items=500)
    bundle = train(data, tmp_path / "models", TrainParams(), progress=False, quiet=True)
    report = json.loads((bundle / contract.REPORT_JSON_FILE).read_text())
    manifest = json.loads((bundle / contract.MANIFEST_FILE).read_text())
    # Items are old: no age window, every non-deleted post is indexed and ranked.
    assert manifest["params"]["index_window_applied_days"] is None
    assert manifest["dims"]["indexed_posts"] == 500
    assert report["protocol"]["catalogue_posts"] == 500
    m = {name: row["ndcg@10"]["mean"] for name, row in report["methods"].items()}
    vs = report["pipeline_vs"]["ndcg@10"]
    # Against a plain ALS tuned on the inner split, the pipeline (its own ALS tuned there
    # too) is at least level; the ALS stage alone is close to it; popularity is beaten.
    assert vs["plain_als"]["verdict"] != "worse, beyond noise", vs["plain_als"]
    assert m["als_stage"] >= 0.8 * m["plain_als"], m
    assert vs["most_popular"]["verdict"] == "better, beyond noise", vs["most_popular"]
    assert any("memberships.csv missing" in n for n in report["notes"])
    assert any("catalogue-like" in n for n in report["notes"])
