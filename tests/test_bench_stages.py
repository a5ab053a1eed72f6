"""The benchmark's per-stage breakdown (benchmarks/stages.py) from two /metrics scrapes:
the wait for a ranking slot is its own row, not part of "handler other"."""

from __future__ import annotations

import pytest

from benchmarks.stages import breakdown


def scrape(requests: int, request_s: float, stages: dict[str, float], wait_s: float) -> str:
    lines = [
        "# TYPE nichefeed_request_latency_seconds histogram",
        f'nichefeed_request_latency_seconds_sum{{method="Rank"}} {request_s}',
        f'nichefeed_request_latency_seconds_count{{method="Rank"}} {requests}',
        "# TYPE nichefeed_stage_latency_seconds histogram",
    ]
    for name, s in stages.items():
        lines += [
            f'nichefeed_stage_latency_seconds_sum{{stage="{name}"}} {s}',
            f'nichefeed_stage_latency_seconds_count{{stage="{name}"}} {requests}',
        ]
    lines += [
        "# TYPE nichefeed_rank_slot_wait_seconds histogram",
        f"nichefeed_rank_slot_wait_seconds_sum {wait_s}",
        f"nichefeed_rank_slot_wait_seconds_count {requests}",
    ]
    return "\n".join(lines) + "\n"


def test_slot_wait_is_its_own_row_and_handler_other_is_what_is_left():
    before = scrape(10, 1.0, {"retrieve": 0.5, "score": 0.2}, 0.1)
    # 100 more requests: 1.2 s in the server, 0.4 s retrieving, 0.1 s scoring, 0.5 s waiting
    after = scrape(110, 2.2, {"retrieve": 0.9, "score": 0.3}, 0.6)
    out = breakdown(before, after, client_mean_ms=15.0)
    rows = {r["stage"]: r["mean_ms"] for r in out["rows"]}
    assert [r["stage"] for r in out["rows"]] == ["slot wait", "retrieve", "score", "handler other", "grpc + transport"]
    assert rows["slot wait"] == pytest.approx(5.0)
    assert rows["retrieve"] == pytest.approx(4.0) and rows["score"] == pytest.approx(1.0)
    assert rows["handler other"] == pytest.approx(2.0)  # 12 ms in the server - 5 - 4 - 1
    assert rows["grpc + transport"] == pytest.approx(3.0)
    assert out["slowest_stage"] == "retrieve"  # a pipeline stage, never the wait


def test_a_server_without_slots_has_a_zero_wait():
    text = scrape(10, 1.0, {"retrieve": 0.5}, 0.0).split("# TYPE nichefeed_rank_slot_wait_seconds")[0]
    later = scrape(20, 2.0, {"retrieve": 1.0}, 0.0).split("# TYPE nichefeed_rank_slot_wait_seconds")[0]
    rows = {r["stage"]: r["mean_ms"] for r in breakdown(text, later, None)["rows"]}
    assert rows["slot wait"] == 0.0 and rows["handler other"] == pytest.approx(50.0)


def test_the_pipelines_cpu_per_call_comes_from_its_own_metric():
    def with_cpu(text: str, cpu_s: float, requests: int) -> str:
        return text + (
            "# TYPE nichefeed_rank_pipeline_cpu_seconds histogram\n"
            f"nichefeed_rank_pipeline_cpu_seconds_sum {cpu_s}\n"
            f"nichefeed_rank_pipeline_cpu_seconds_count {requests}\n"
        )

    before = with_cpu(scrape(10, 1.0, {"retrieve": 0.5}, 0.0), 0.02, 10)
    after = with_cpu(scrape(110, 2.2, {"retrieve": 0.9}, 0.0), 0.27, 110)  # 0.25 s of CPU over 100 calls
    assert breakdown(before, after, None)["pipeline_cpu_ms"] == pytest.approx(2.5)
    # A server from before the metric: no figure rather than a zero.
    assert breakdown(scrape(10, 1.0, {}, 0.0), scrape(20, 2.0, {}, 0.0), None)["pipeline_cpu_ms"] is None
