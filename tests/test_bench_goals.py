"""The benchmark's throughput goal judged from a run's numbers (benchmarks/report.py): the
share of the empty RPC's calls/s, and the CPU a call that share leaves on the machine."""

from __future__ import annotations

from benchmarks import report


def rank_row(rank_per_s: float, empty_per_s: float, floor_per_s: float) -> dict:
    return {
        "world": "1m",
        "candidates": 500,
        "workers": 2,
        "concurrency": 8,
        "available": True,
        "rank": {"throughput_per_s": rank_per_s},
        "empty_rpc": {"throughput_per_s": empty_per_s},
        "floor": {"throughput_per_s": floor_per_s},
        "ratio": {
            "throughput_vs_empty_rpc": round(rank_per_s / empty_per_s, 3),
            "p50_vs_floor": 2.0,
            "p99_vs_floor": 2.0,
        },
        "stages": {"rows": [{"stage": "score", "mean_ms": 1.0, "share": 0.5}]},
    }


def test_the_goal_leaves_a_call_the_cores_over_its_rate():
    # 2 cores, empty RPC 8000/s: 25% of it is 2000 calls/s, 1.0 ms of the cores a call;
    # the floor op at 2500/s is 0.8 ms a call, Rank at 500/s 4.0 ms.
    out = {"machine": {"cores": 2}, "rank": [rank_row(500.0, 8000.0, 2500.0)]}
    (entry,) = report.goals(out, "1m", 500)["throughput"]
    assert entry["status"] == "missed" and entry["x"] == 0.062
    assert (entry["cores"], entry["budget_ms"], entry["floor_ms"], entry["rank_ms"]) == (2, 1.0, 0.8, 4.0)
    note = report._budget_note(entry)  # the goals table's words for it
    assert "at most 1.00 ms of CPU" in note and "about 0.20 ms for all Rank does beyond it" in note


def test_a_rank_at_the_goal_meets_it_and_results_without_cores_carry_no_budget():
    out = {"rank": [rank_row(2000.0, 8000.0, 2500.0)]}
    (entry,) = report.goals(out, "1m", 500)["throughput"]
    assert entry["status"] == "met" and "budget_ms" not in entry and report._budget_note(entry) == ""
