"""The benchmark code runs end to end on the tiny world (no timing is asserted: numbers
are judged in benchmarks/README.md, never in tests)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmarks import run
from core import contract


def _write_traces(client, version: str) -> tuple[int, int]:
    return client.xlen(contract.EVENT_LOG_KEY), client.xlen(contract.live_stream_key(version))


def test_bench_runs_on_tiny_world(published, redis_server, redis_client, tmp_path):
    out_dir = tmp_path / "results"
    before = _write_traces(redis_client, published.name)
    rc = run.main(
        [
            "--bundle",
            str(published),
            "--redis-url",
            redis_server.url,
            "--candidates",
            "50",
            "--workers",
            "1",
            "--concurrency",
            "1,2",
            "--scale-time",
            "0.1",
            "--out",
            str(out_dir),
        ]
    )
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
    assert [p["role"] for p in res["memory"][0]["processes"]] == ["server"]
    assert res["comparisons"]["hydration"]["given"]["packed_mget"]["n"] > 0
    assert {g["status"] for g in res["goals"]["latency"]} <= {"met", "missed"}
    md = (out_dir / "latest.md").read_text()
    assert "## Rank over gRPC" in md

    # The cluster rows: the same Rank runs against the bundle published into a local cluster.
    cl = res["cluster"]
    assert cl["masters"] == 3 and cl["candidates"] == 50
    assert [(r["workers"], r["concurrency"]) for r in cl["rows"]] == [(1, 1), (1, 2)]
    for r in cl["rows"]:
        assert r["available"] and r["rank"]["n"] > 0 and not r["rank"]["errors"], r
    h = cl["hydration"]
    assert h["records"] == 50 and h["single"]["n"] > 0 and h["cluster"]["n"] > 0
    assert sum(h["cluster"]["mget_commands_per_node"]) <= 50 and len(h["cluster"]["mget_commands_per_node"]) == 3
    assert "## Rank on a Redis Cluster" in md

    # The write path: stream and unary ingest, Rank idle and while a stream ingests.
    ing = res["ingest"]
    assert ing["redis"]["appendonly"] == "yes" and ing["redis"]["appendfsync"] == "always"
    assert ing["users"]["disjoint"] and ing["users"]["rank"] > 0 and ing["users"]["ingest"] > 0
    [row] = ing["rows"]
    assert row["available"] and row["workers"] == 1
    assert {x["op"] for x in row["ingest"]} == {"stream", "batches", "unary", "graph"}
    for x in [*row["ingest"], row["ingest_during_rank"]]:
        assert x["applied"] > 0 and x["applied"] == x["events_sent"], x
        assert x["duplicates"] == 0 and not x["errors"], x
        assert x["events_per_s"] > 0 and x["calls"] > 0
    for key in ("rank_idle", "rank_ingesting", "rank_live_graph"):
        assert row[key]["rank"]["n"] > 0 and not row[key]["rank"]["errors"]
    assert row["rank_live_graph"]["floor"]["n"] > 0
    assert "Rank when every user has a live community graph" in md
    assert ing["redis"]["event_log_entries_after"] >= ing["events_applied_total"]
    assert "## Write path: engagement ingest" in md
    # Writes went to a scratch Redis that is gone; the given Redis saw none of them.
    assert not Path(ing["redis"]["dir"]).exists()
    assert _write_traces(redis_client, published.name) == before


def test_experiment_bench_runs_on_tiny_world(tiny_bundle, tmp_path):
    """benchmarks/experiment.py end to end: every setting measured, both variants served."""
    from benchmarks import experiment as exp_bench

    assert exp_bench.main(["--bundle", str(tiny_bundle), "--requests", "60", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "experiment.json").read_text())
    s = res["settings"]
    assert set(s["on"]["variants"]) == {"control", "candidate"}
    assert set(s["off"]["variants"]) == {"none"}
    assert set(s["share 0, shadow rate 1"]["variants"]) == {"control"}
    for row in s.values():
        assert row["rank"]["n"] == 60 and row["memory"]["rss_mb"] > 0
    assert res["shadow"]["scored"] > 0 and res["shadow"]["cpu_ms_per_shadow_ranking"] > 0
    assert "| on |" in (tmp_path / "experiment.md").read_text()


def test_a_cached_world_whose_scorer_this_checkout_cannot_load_is_rebuilt(learned_bundle, tmp_path):
    """A bench world's cached bundle is reused only if this checkout can serve it: a blend
    scorer stored without its scales (an earlier form) means retraining the world."""
    from benchmarks.worlds import BenchWorld

    bundle = tmp_path / "models" / learned_bundle.name
    shutil.copytree(learned_bundle, bundle)
    world = BenchWorld(None, root=tmp_path)
    assert world._bundle_current()
    scorer = json.loads((bundle / contract.SCORER_FILE).read_text())
    assert scorer["kind"] == "blend"  # the default objective
    del scorer["scales"]
    (bundle / contract.SCORER_FILE).write_text(json.dumps(scorer))
    assert not world._bundle_current()


def test_a_multi_process_row_whose_connections_all_reached_one_process_is_not_counted():
    from benchmarks.servers import unspread_note

    assert unspread_note(2, 8, [3, 5]) is None
    assert unspread_note(2, 1, [1]) is None  # one caller: one connection, one process, as asked
    assert unspread_note(1, 8, [8]) is None
    note = unspread_note(2, 8, [8])
    assert note is not None and "8 connection(s) on 1 of the 2 processes" in note


def test_the_memory_table_names_each_process_by_its_role():
    """A --workers tree: its root the supervisor, the children started from WORKER_BOOT
    the workers, anything else (a helper the tree grew) by its command's tail."""
    from benchmarks.memory import role
    from service.workers import WORKER_BOOT

    tree = [
        {"cmd": "/srv/.venv/bin/python -m service --grpc-addr"},
        {"cmd": f"/srv/.venv/bin/python -c {WORKER_BOOT}"},
        {"cmd": f"/srv/.venv/bin/python -c {WORKER_BOOT}"},
        {"cmd": "/usr/bin/redis-server 127.0.0.1:6379"},
    ]
    assert [role(p, tree) for p in tree] == ["supervisor", "worker", "worker", "/usr/bin/redis-server 127.0.0.1:6379"]
    assert role(tree[0], tree[:1]) == "server"
