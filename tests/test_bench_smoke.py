"""The benchmark code runs end to end on the tiny world (no timing is asserted: numbers
are judged in benchmarks/README.md, never in tests)."""
from __future__ import annotations

import json

from benchmarks import run


def test_bench_runs_on_tiny_world(published, redis_server, tmp_path):
    out_dir = tmp_path / "results"
    rc = run.main(["--bundle", str(published), "--redis-url", redis_server.url, "--candidates", "50",
                   "--workers", "1", "--concurrency", "1,2", "--scale-time", "0.1", "--out", str(out_dir)])
    assert rc == 0
    res = json.loads((out_dir / "latest.json").read_text())
    rows = [r for r in res["rank"] if r.get("available")]
    assert {r["concurrency"] for r in rows} == {1, 2}
    for r in rows:
        assert r["rank"]["n"] > 0 and not r["rank"]["errors"]
        assert r["floor"]["n"] > 0 and r["empty_rpc"]["n"] > 0
        stage_names = [s["stage"] for s in r["stages"]["rows"]]
        assert "handler other" in stage_names and len(stage_names) > 3  # stages come from /metrics
    assert res["retrieval"]["given"]["rows"][0]["recall@50"] == 1.0  # exact search agrees with itself
    assert res["memory"] and res["memory"][0]["total"]["rss_mb"] > 0
    assert res["comparisons"]["hydration"]["given"]["packed_mget"]["n"] > 0
    assert {g["status"] for g in res["goals"]["latency"]} <= {"met", "missed"}
    assert "## Rank over gRPC" in (out_dir / "latest.md").read_text()
