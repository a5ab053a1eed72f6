"""Results: the goals judged from one run's numbers, a JSON file and a Markdown report."""

from __future__ import annotations

import json
import os
from pathlib import Path

LATENCY_GOAL = 2.5  # Rank p50 and p99 within this multiple of the floor, same run, same concurrency
# Rank calls/s with 2 processes at 8+ callers, as a share of empty-RPC calls/s: close to
# this machine's limit, since the floor op itself (empty RPC + PING + 500-record MGET) and
# one FAISS search take about half of two cores at that rate; the floor op's own calls/s
# is reported beside it, and what the goal leaves a call of the machine's cores (budget).
THROUGHPUT_GOAL = 0.25
CPU_GOAL_MS = 2.0  # server CPU per Rank call


def _holders(row: dict, top: int = 3) -> list[dict]:
    st = row.get("stages") or {}
    rows = sorted(st.get("rows", []), key=lambda r: r["mean_ms"], reverse=True)
    return [{"stage": r["stage"], "mean_ms": r["mean_ms"], "share": r.get("share")} for r in rows[:top]]


def goals(out: dict, world: str, candidates: int) -> dict:
    rows = [r for r in out["rank"] if r["world"] == world and r["candidates"] == candidates]
    latency, throughput = [], []
    for r in rows:
        if r.get("concurrency") not in (1, 8):
            continue
        if not r.get("available"):
            latency.append(
                {
                    "workers": r["workers"],
                    "concurrency": r.get("concurrency"),
                    "status": "not available",
                    "note": r.get("note"),
                }
            )
            continue
        ratio = r["ratio"]
        met = (
            ratio["p50_vs_floor"] is not None
            and ratio["p99_vs_floor"] is not None
            and ratio["p50_vs_floor"] <= LATENCY_GOAL
            and ratio["p99_vs_floor"] <= LATENCY_GOAL
        )
        entry = {
            "workers": r["workers"],
            "concurrency": r["concurrency"],
            "status": "met" if met else "missed",
            "p50_ms": r["rank"].get("p50_ms"),
            "floor_p50_ms": r["floor"].get("p50_ms"),
            "p50_x": ratio["p50_vs_floor"],
            "p99_ms": r["rank"].get("p99_ms"),
            "floor_p99_ms": r["floor"].get("p99_ms"),
            "p99_x": ratio["p99_vs_floor"],
        }
        if not met:
            worst = max(ratio["p50_vs_floor"] or 0, ratio["p99_vs_floor"] or 0)
            entry["missed_by"] = f"{worst / LATENCY_GOAL:.2f}x the goal ({worst:.2f}x floor vs {LATENCY_GOAL}x)"
            entry["held_back_by"] = _holders(r)
        latency.append(entry)
    for r in rows:
        if r["workers"] != 2 or r.get("concurrency", 0) < 8:
            continue
        if not r.get("available"):
            throughput.append({"concurrency": r.get("concurrency"), "status": "not available", "note": r.get("note")})
            continue
        x = r["ratio"]["throughput_vs_empty_rpc"]
        floor_per_s = r["floor"].get("throughput_per_s")
        entry = {
            "concurrency": r["concurrency"],
            "rank_per_s": r["rank"]["throughput_per_s"],
            "empty_rpc_per_s": r["empty_rpc"]["throughput_per_s"],
            "floor_per_s": floor_per_s,
            "x_floor": round(r["rank"]["throughput_per_s"] / floor_per_s, 3) if floor_per_s else None,
            "x": x,
            "status": "met" if x is not None and x >= THROUGHPUT_GOAL else "missed",
            **cpu_budget(out.get("machine", {}).get("cores"), r, floor_per_s),
        }
        if entry["status"] == "missed":
            entry["missed_by"] = (
                f"{x / THROUGHPUT_GOAL:.2f} of the goal ({x:.1%} of empty-RPC calls/s vs {THROUGHPUT_GOAL:.0%})"
            )
            entry["held_back_by"] = _holders(r)
        throughput.append(entry)
    cpu = []
    for r in rows:
        ms = ((r.get("cpu") or {}).get("rank") or {}).get("server_ms_per_call") if r.get("available") else None
        if ms is not None and r.get("concurrency") in (1, 8):
            cpu.append(
                {
                    "workers": r["workers"],
                    "concurrency": r["concurrency"],
                    "server_ms_per_call": ms,
                    "status": "met" if ms <= CPU_GOAL_MS else "missed",
                }
            )
    return {
        "world": world,
        "candidates": candidates,
        "latency_goal_x_floor": LATENCY_GOAL,
        "throughput_goal_x_empty_rpc": THROUGHPUT_GOAL,
        "cpu_goal_ms": CPU_GOAL_MS,
        "latency": latency,
        "throughput": throughput,
        "cpu": cpu,
    }


def cpu_budget(cores: int | None, row: dict, floor_per_s: float | None) -> dict:
    """What the throughput goal leaves one Rank call of the machine's cores, in ms.

    Server, loaders and Redis share the cores, so calls/s can never exceed cores / (the
    CPU all of them spend on a call). At the goal's rate (a share of the empty RPC's
    calls/s) that is a ceiling on a Rank call's CPU, whatever the code: `budget_ms`. The
    floor op's own rate at the same concurrency, read the same way, is `floor_ms` (its
    CPU a call, or more when it left the cores idle part of the time), so a Rank call has
    about `budget_ms - floor_ms` (at least that) for everything it does beyond an empty
    call, a PING and reading its 500 records: retrieval, features, scoring, the response."""
    empty = row["empty_rpc"]["throughput_per_s"]
    if not cores or not empty or not floor_per_s:
        return {}
    return {
        "cores": cores,
        "budget_ms": round(1000 * cores / (THROUGHPUT_GOAL * empty), 3),
        "floor_ms": round(1000 * cores / floor_per_s, 3),
        "rank_ms": round(1000 * cores / row["rank"]["throughput_per_s"], 3),
    }


# --------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------
def _budget_note(e: dict) -> str:
    """The goal's CPU ceiling per call (cpu_budget), in words; "" for results without it."""
    if "budget_ms" not in e:
        return ""
    return (
        f"; on {e['cores']} cores the goal leaves a call at most {e['budget_ms']:.2f} ms of CPU (server, loaders "
        f"and Redis together); the floor op's rate is {e['floor_ms']:.2f} ms of the cores a call, leaving "
        f"about {e['budget_ms'] - e['floor_ms']:.2f} ms for all Rank does beyond it; Rank's rate is "
        f"{e['rank_ms']:.2f} ms a call"
    )


def _f(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return out


def markdown(out: dict) -> str:
    m = out["machine"]
    lines = [f"# nichefeed benchmark results ({out['mode']}, {out['started_at']})", ""]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    lines += [
        f"Machine: {m['cores']} cores, {m['cpu']}, {m.get('memory_gb')} GB, Linux {m['kernel']}, "
        f"Python {m['python']}, redis-server {m.get('redis_server')}; {libs}. "
        f"Load average at start {tuple(round(x, 2) for x in m['loadavg_start'])}, "
        f"at end {tuple(round(x, 2) for x in m.get('loadavg_end', ()))}. Total time {out['timings_s'].get('total')} s.",
        "",
    ]
    pinned = out["plan"].get("pin_cpus")
    if pinned is not None:
        lines += [
            "Servers: "
            + (
                "`--pin-cpus true`, each server process on a CPU of its own (worker i on CPU i)."
                if pinned
                else "`--pin-cpus false` (`--no-pin-cpus`), every server process free to run on any CPU."
            ),
            "",
        ]
    for name, w in out["worlds"].items():
        d = w["dims"]
        lines.append(
            f"World `{name}`: {d['posts']} posts ({d['indexed_posts']} in the index), {d['users']} users, "
            f"{d['communities']} communities, {d['factors']} factors; Redis used memory "
            f"{w.get('redis_used_memory_mb', '-')} MB."
        )
    lines.append("")

    g = out.get("goals") or {}
    if g:
        lines += [f"## Goals ({g['world']} world, {g['candidates']} candidates)", ""]
        rows = []
        for e in g["latency"]:
            if e["status"] == "not available":
                rows.append(
                    [f"latency, {e['workers']} proc, c={e['concurrency']}", "not available", e.get("note") or "", ""]
                )
                continue
            detail = f"p50 {e['p50_ms']} ms vs floor {e['floor_p50_ms']} ms = {e['p50_x']}x; p99 {e['p99_ms']} ms vs floor {e['floor_p99_ms']} ms = {e['p99_x']}x"
            why = ""
            if e["status"] == "missed":
                why = f"missed by {e['missed_by']}; biggest: " + ", ".join(
                    f"{h['stage']} {h['mean_ms']} ms ({(h['share'] or 0):.0%})" for h in e["held_back_by"]
                )
            rows.append(
                [
                    f"latency <= {g['latency_goal_x_floor']}x floor, {e['workers']} proc, c={e['concurrency']}",
                    e["status"],
                    detail,
                    why,
                ]
            )
        for e in g["throughput"]:
            if e["status"] == "not available":
                rows.append([f"throughput, 2 proc, c={e['concurrency']}", "not available", e.get("note") or "", ""])
                continue
            why = ""
            if e["status"] == "missed":
                why = f"missed: {e['missed_by']}; biggest: " + ", ".join(
                    f"{h['stage']} {h['mean_ms']} ms ({(h['share'] or 0):.0%})" for h in e["held_back_by"]
                )
            rows.append(
                [
                    f"throughput >= {g['throughput_goal_x_empty_rpc']:.0%} of empty RPC, 2 proc, c={e['concurrency']}",
                    e["status"],
                    f"{e['rank_per_s']} vs {e['empty_rpc_per_s']} calls/s = {e['x']:.1%}; the floor op itself "
                    f"{e.get('floor_per_s')} calls/s (Rank = {(e.get('x_floor') or 0):.1%} of it)" + _budget_note(e),
                    why,
                ]
            )
        if not g["throughput"]:
            rows.append(["throughput, 2 proc", "not measured", "", ""])
        for e in g.get("cpu", []):
            rows.append(
                [
                    f"server CPU <= {g['cpu_goal_ms']} ms per Rank, {e['workers']} proc, c={e['concurrency']}",
                    e["status"],
                    f"{e['server_ms_per_call']} ms",
                    "" if e["status"] == "met" else "the CPU table and the stage tables below say where it goes",
                ]
            )
        lines += _table(["goal", "status", "measured", "why"], rows) + [""]

    lines += ["## Floor: Redis alone (from a loader process)", ""]
    lines += _table(
        ["world", "op", "records", "callers", "p50 ms", "p99 ms", "calls/s"],
        [
            [
                r["world"],
                r["op"],
                r.get("records") or "",
                r["concurrency"],
                r.get("p50_ms"),
                r.get("p99_ms"),
                r["throughput_per_s"],
            ]
            for r in out["redis_floor"]
        ],
    ) + [""]

    lines += [
        "## Rank over gRPC, beside the floor measured against the same server just before",
        "",
        "floor = empty gRPC call (health Check) + Redis PING + MGET of N packed records, in sequence, "
        "by the same loader processes at the same concurrency. x = Rank / floor.",
        "",
    ]
    rows = []
    for r in out["rank"]:
        if not r.get("available"):
            rows.append(
                [r["world"], r["candidates"], r["workers"], r.get("concurrency", "-"), "not available", *[""] * 12]
            )
            continue
        k, f, e, x = r["rank"], r["floor"], r["empty_rpc"], r["ratio"]
        rows.append(
            [
                r["world"],
                r["candidates"],
                r["workers"],
                r["concurrency"],
                k["n"],
                k.get("p50_ms"),
                k.get("p90_ms"),
                k.get("p99_ms"),
                k.get("p999_ms"),
                k["throughput_per_s"],
                f.get("p50_ms"),
                f.get("p99_ms"),
                x["p50_vs_floor"],
                x["p99_vs_floor"],
                e.get("p50_ms"),
                e["throughput_per_s"],
                f"{x['throughput_vs_empty_rpc']:.1%}" if x["throughput_vs_empty_rpc"] is not None else "-",
            ]
        )
    lines += _table(
        [
            "world",
            "cand",
            "procs",
            "callers",
            "n",
            "p50 ms",
            "p90",
            "p99",
            "p99.9",
            "calls/s",
            "floor p50",
            "floor p99",
            "x p50",
            "x p99",
            "empty RPC p50",
            "empty RPC calls/s",
            "Rank/empty calls",
        ],
        rows,
    ) + [""]
    errs = [
        (r["world"], r["candidates"], r["workers"], r["concurrency"], r["rank"]["errors"])
        for r in out["rank"]
        if r.get("available") and r["rank"]["errors"]
    ]
    if errs:
        lines += ["Errors during Rank runs: " + "; ".join(f"{w}/{c}/{p}p/c{n}: {e}" for w, c, p, n, e in errs), ""]

    lines += _cluster(out)
    lines += _cpu_table(out)
    lines += _stage_tables(out)
    for r in (out.get("retrieval") or {}).values():
        lines += _retrieval(r)
    lines += _memory(out.get("memory") or [])
    lines += _comparisons(out.get("comparisons") or {})
    lines += _ingest(out.get("ingest"))
    return "\n".join(lines) + "\n"


def _cluster(out: dict) -> list[str]:
    """The cluster rows beside the single-node rows of the same world, candidates,
    server processes and callers (benchmarks/cluster.py)."""
    cl = out.get("cluster")
    if not cl:
        return []
    single = {
        (r["workers"], r["concurrency"]): r
        for r in out["rank"]
        if r.get("available") and r["world"] == cl["world"] and r["candidates"] == cl["candidates"]
    }
    lines = [
        f"## Rank on a Redis Cluster (3 masters, 3 replicas, loopback) beside one node (world `{cl['world']}`, "
        f"{cl['candidates']} candidates)",
        "",
        f"The same bundle published into a local cluster ({cl['publish_s']} s), the same server flags but "
        "`--redis-url redis+cluster://...`, the same loaders, users and callers; measured after the single-node "
        "rows of this run. CPU = server CPU ms per call.",
        "",
    ]
    rows = []
    for r in cl["rows"]:
        if not r.get("available"):
            rows.append([r["workers"], "-", "not available: " + r.get("note", ""), *[""] * 7])
            continue
        k = r["rank"]
        s = single.get((r["workers"], r["concurrency"]))
        sk = s["rank"] if s else {}
        rows.append(
            [
                r["workers"],
                r["concurrency"],
                sk.get("p50_ms"),
                sk.get("p99_ms"),
                sk.get("throughput_per_s"),
                s["cpu"]["rank"]["server_ms_per_call"] if s else None,
                k.get("p50_ms"),
                k.get("p99_ms"),
                k["throughput_per_s"],
                r["cpu"]["server_ms_per_call"],
            ]
        )
    lines += _table(
        [
            "procs",
            "callers",
            "one node p50 ms",
            "p99",
            "calls/s",
            "CPU",
            "cluster p50 ms",
            "p99",
            "calls/s",
            "CPU",
        ],
        rows,
    ) + [""]
    errs = [
        (r["workers"], r["concurrency"], r["rank"]["errors"])
        for r in cl["rows"]
        if r.get("available") and r["rank"]["errors"]
    ]
    if errs:
        lines += ["Errors during cluster Rank runs: " + "; ".join(f"{p}p/c{c}: {e}" for p, c, e in errs), ""]
    h = cl.get("hydration")
    if h:
        lines += [
            f"Hydration of {h['records']} post records as Rank reads them (`FeatureStore.read_post_records`, "
            f"sequential, decode included): one node, one MGET: p50 {_f(h['single']['p50_ms'], 3)} ms, "
            f"p99 {_f(h['single']['p99_ms'], 3)} ms; cluster, one MGET per post slot "
            f"({'/'.join(map(str, h['cluster']['mget_commands_per_node']))} MGETs on the three masters, sent at once): "
            f"p50 {_f(h['cluster']['p50_ms'], 3)} ms, p99 {_f(h['cluster']['p99_ms'], 3)} ms"
            + (
                f"; one node, one single-key MGET a post in one pipeline: p50 {_f(h['single_per_key']['p50_ms'], 3)} "
                f"ms, p99 {_f(h['single_per_key']['p99_ms'], 3)} ms (the share of the cost that is one command per "
                "key, cluster or not)."
                if h.get("single_per_key")
                else "."
            ),
            "",
        ]
    return lines


def _cpu_table(out: dict) -> list[str]:
    rows = []
    for r in out["rank"]:
        if not r.get("available") or "cpu" not in r:
            continue
        k, e = r["cpu"]["rank"], r["cpu"]["empty_rpc"]
        pipeline_ms = (r.get("stages") or {}).get("pipeline_cpu_ms")
        rows.append(
            [
                r["world"],
                r["candidates"],
                r["workers"],
                r["concurrency"],
                k["server_ms_per_call"],
                "" if pipeline_ms is None else pipeline_ms,
                k["loader_ms_per_call"],
                k["server_cores_busy"],
                " / ".join(f"{v:.1f}" for v in k["server_cpu_s_by_process"]),
                " / ".join(str(v) for v in r.get("connections_per_process", [])),
                e["server_ms_per_call"],
                e["loader_ms_per_call"],
                e["server_cores_busy"],
            ]
        )
    if not rows:
        return []
    return (
        [
            "## CPU per call (process CPU times, during the same runs)",
            "",
            "On 2 cores calls/s cannot exceed 2 / (server + loader CPU per call), whatever the concurrency. "
            "`CPU s by process` shows how a multi-process server shared the work; `connections` how "
            "SO_REUSEPORT spread the load generator's connections over its processes. `pipeline CPU` is the "
            "server's own `nichefeed_rank_pipeline_cpu_seconds` (the Rank pipeline's thread CPU per call); "
            "the server CPU per call beyond it is the gRPC layer, the servicer and the server's other threads.",
            "",
        ]
        + _table(
            [
                "world",
                "cand",
                "procs",
                "callers",
                "Rank server CPU ms/call",
                "of it pipeline CPU ms/call",
                "loader ms/call",
                "server cores busy",
                "CPU s by process",
                "connections",
                "empty RPC server ms/call",
                "loader ms/call",
                "server cores busy",
            ],
            rows,
        )
        + [""]
    )


def _stage_tables(out: dict) -> list[str]:
    lines = [
        "## Where the time goes: per-stage mean ms (share of the client-observed mean)",
        "",
        "From the server's own `nichefeed_stage_latency_seconds` (Δsum / ΔRank requests between scrapes "
        "before and after each run). `slot wait` = `nichefeed_rank_slot_wait_seconds`: queueing for one of "
        "the process's ranking slots (`--rank-slots`) before the pipeline. `handler other` = "
        '`nichefeed_request_latency_seconds{method="Rank"}` minus the stages and the slot wait (request '
        "conversion, building the RankResponse in the servicer); "
        "`grpc + transport` = client-observed mean minus the server's request latency (protobuf "
        "(de)serialisation, the gRPC stack, queueing, loopback, the client). Serialisation in the issue's "
        "sense is `respond` + `handler other` + the protobuf share of `grpc + transport`.",
        "",
    ]
    groups: dict[tuple, list] = {}
    for r in out["rank"]:
        if r.get("available") and r.get("stages"):
            groups.setdefault((r["world"], r["candidates"]), []).append(r)
    for (world, cand), rows in groups.items():
        names: list[str] = []
        for r in rows:
            for s in r["stages"]["rows"]:
                if s["stage"] not in names:
                    names.append(s["stage"])
        header = ["stage"] + [f"{r['workers']}p c{r['concurrency']}" for r in rows]
        body = []
        for n in names:
            cells = [n]
            for r in rows:
                s = next((s for s in r["stages"]["rows"] if s["stage"] == n), None)
                cells.append(f"{s['mean_ms']:.2f} ({(s['share'] or 0):.0%})" if s else "-")
            body.append(cells)
        body.append(
            ["candidates after retrieve"]
            + [
                _f(next((s.get("candidates_out") for s in r["stages"]["rows"] if s["stage"] == "retrieve"), None), 0)
                for r in rows
            ]
        )
        body.append(["client-observed mean"] + [_f(r["rank"].get("mean_ms")) for r in rows])
        lines += [f"World `{world}`, {cand} candidates:", ""] + _table(header, body) + [""]
    return lines


def _retrieval(r: dict) -> list[str]:
    if not r:
        return []
    ks = r["ks"]
    lines = [
        f"## Retrieval: FAISS on the trained vectors (world `{r.get('world')}`, {r['vectors']} vectors x {r['dim']}, "
        f"{r['queries']} user queries, 1 thread, one query per search)",
        "",
        f"The service serves `{r['serving_index']}`. Recall is tie-aware against exact search "
        "(a hit is a post scoring at least the exact K-th score).",
        "",
    ]
    header = ["index", "build s", "MB"] + [x for k in ks for x in (f"recall@{k}", f"p50 ms@{k}", f"p99 ms@{k}")]
    rows = [
        [x["index"], x["build_s"], x["size_mb"]] + [x[f"{m}@{k}"] for k in ks for m in ("recall", "p50_ms", "p99_ms")]
        for x in r["rows"]
    ]
    lines += _table(header, rows)
    c = r["choice"]
    lines += [
        "",
        f"Fastest at recall@{c['k']} >= {c['min_recall']}: **{c['fastest']}** (p50 {c['fastest_p50_ms']} ms, "
        f"recall {c['fastest_recall']}), {c['speedup_vs_exact']}x faster than exact ({c['exact_p50_ms']} ms).",
        "",
    ]
    return lines


def _memory(mem: list[dict]) -> list[str]:
    if not mem:
        return []
    lines = [
        "## Memory of the server process tree (after its Rank runs)",
        "",
        "RSS double-counts pages shared between processes; PSS splits them (the tree's real cost); "
        "private = what one process alone holds.",
        "",
    ]
    rows = []
    for m in mem:
        files = {}
        for p in m["processes"]:
            for name, v in p["bundle_files"].items():
                files.setdefault(name, []).append(f"{v['rss_mb']:.0f}")
        rows.append(
            [
                m["world"],
                m["workers"],
                m["n_processes"],
                m["total"]["rss_mb"],
                m["total"]["pss_mb"],
                m["total"]["private_mb"],
                m["total"]["shared_mb"],
                "; ".join(f"{k} {'/'.join(v)}" for k, v in files.items()) or "none mapped",
            ]
        )
    lines += _table(
        [
            "world",
            "procs asked",
            "processes",
            "RSS MB",
            "PSS MB",
            "private MB",
            "shared MB",
            "bundle files mapped (RSS MB per process)",
        ],
        rows,
    ) + [""]
    rows = []
    for m in mem:
        for p in m["processes"]:
            big = sum(v["rss_mb"] for v in p["bundle_files"].values())
            rows.append(
                [
                    m["world"],
                    m["workers"],
                    p["pid"],
                    p.get("role", p["cmd"][-40:]),
                    p["rss_mb"],
                    p["pss_mb"],
                    p["private_mb"],
                    p["anon_mb"],
                    round(big, 1),
                ]
            )
    lines += [
        "Per process (anon = heap: Python objects such as id lists and dicts; mapped = bundle files resident):",
        "",
    ]
    lines += _table(
        ["world", "procs asked", "pid", "process", "RSS MB", "PSS MB", "private MB", "anon MB", "bundle mapped MB"],
        rows,
    ) + [""]
    return lines


def _comparisons(c: dict) -> list[str]:
    lines = []
    if c.get("hydration"):
        lines += ["## Hydration: packed single round trip vs alternatives (sequential, bench process)", ""]
        rows = []
        for world, h in c["hydration"].items():
            for k in ("packed_mget", "packed_get_pipeline", "field_hashes_hmget_pipeline"):
                rows.append(
                    [world, h["records"], k, h[k]["p50_ms"], h[k]["p99_ms"], h[k].get("x_packed_mget_p50", 1.0)]
                )
        lines += _table(["world", "records", "layout / access", "p50 ms", "p99 ms", "x packed MGET p50"], rows) + [""]
    if c.get("faiss_vs_numpy"):
        lines += ["## Top-K retrieval: the served FAISS index vs a numpy brute-force scan (1 thread)", ""]
        rows = [
            [
                w,
                v["vectors"],
                v["k"],
                v["faiss_flat_ip"]["p50_ms"],
                v["faiss_flat_ip"]["p99_ms"],
                v["numpy_scan"]["p50_ms"],
                v["numpy_scan"]["p99_ms"],
                v["numpy_x_faiss_p50"],
                v["same_ids_share"],
            ]
            for w, v in c["faiss_vs_numpy"].items()
        ]
        lines += _table(
            [
                "world",
                "vectors",
                "k",
                "FAISS p50 ms",
                "FAISS p99",
                "numpy p50 ms",
                "numpy p99",
                "numpy / FAISS",
                "same ids",
            ],
            rows,
        ) + [""]
    return lines


def _ingest(ing: dict | None) -> list[str]:
    if not ing:
        return []
    rd = ing.get("redis") or {}
    mix = ", ".join(f"{k} {v:.1%}" for k, v in ing["kind_mix"].items())
    lines = [
        f"## Write path: engagement ingest (world `{ing['world']}`)",
        "",
        f"Loader: one process on loopback, separate from the server and from the Rank loaders. Events: unique "
        f"event_ids, {ing['users']['ingest']} users reserved for ingest (the {ing['users']['rank']} Rank users "
        f"are others, so their seen sets do not change), posts of the world drawn by popularity, kinds {mix}. "
        f"Streams of at most {ing['stream_events']} events; unary calls of {ing['batch']} events. Redis: a "
        f"scratch {rd.get('source', '?')} of the world's ({rd.get('seconds', '?')} s to set up, deleted "
        f"afterwards), **appendonly {rd.get('appendonly', '?')}, appendfsync {rd.get('appendfsync', '?')}** "
        f"(a write is acknowledged after fsync); keys {rd.get('keys', '?')} before, {rd.get('keys_after', '?')} "
        f"after; aof_delayed_fsync {rd.get('aof_delayed_fsync', '?')}. After {ing.get('events_applied_total', '?')} "
        f"applied events: live stream {rd.get('live_stream_entries_after', '?')} entries (every worker replays "
        f"it on start; compacted every 30 s past 10k entries), event log {rd.get('event_log_entries_after', '?')} entries, Redis used "
        f"memory {rd.get('used_memory_mb_after', '?')} MB.",
        "",
    ]
    rows = []
    for r in ing["rows"]:
        if not r.get("available"):
            rows.append([r["workers"], "not available", r.get("note") or "", *[""] * 11])
            continue
        for x in r.get("ingest", []):
            cpu = x.get("cpu") or {}
            what = {
                "stream": f"StreamEngagements x{x['concurrency']}",
                "batches": f"StreamEngagementBatches x{x['concurrency']}",
                "graph": f"WriteGraph x{x['concurrency']} callers (graph events)",
            }.get(x["op"], f"WriteEngagements x{x['concurrency']} callers")
            streamed = x["op"] in ("stream", "batches")
            rows.append(
                [
                    r["workers"],
                    what,
                    x["applied"],
                    x["seconds"],
                    _f(x["events_per_s"], 0),
                    x["calls"],
                    _f(x.get("events_per_call"), 0),
                    x.get("call_p50_ms"),
                    x.get("call_max_ms") if streamed else x.get("call_p99_ms"),
                    cpu.get("server_ms_per_1k_events"),
                    cpu.get("redis_ms_per_1k_events"),
                    cpu.get("redis_cores_busy"),
                    " / ".join(f"{v:.1f}" for v in cpu.get("server_cpu_s_by_process", [])),
                    (str(x["errors"]) if x["errors"] else "")
                    + (f" {x['first_error']}" if x.get("first_error") else ""),
                ]
            )
    lines += ["Ingest alone (events/s = events the responses report `applied` / wall time of the job):", ""]
    lines += _table(
        [
            "procs",
            "method",
            "applied",
            "s",
            "events/s",
            "calls",
            "events/call",
            "call p50 ms",
            "call max (stream) / p99 (unary) ms",
            "server CPU ms/1k ev",
            "redis CPU ms/1k ev",
            "redis cores busy",
            "server CPU s by process",
            "errors",
        ],
        rows,
    ) + [""]
    rows = []
    for r in ing["rows"]:
        if not r.get("available"):
            continue
        i, b, d = r["rank_idle"], r["rank_ingesting"], r["ingest_during_rank"]
        ir, br = i["rank"], b["rank"]

        def stage(x, name):
            st = next((s for s in ((x.get("stages") or {}).get("rows") or []) if s["stage"] == name), None)
            return st["mean_ms"] if st else None

        rows.append(
            [
                r["workers"],
                ing["rank_concurrency"],
                ir.get("p50_ms"),
                ir.get("p99_ms"),
                ir["throughput_per_s"],
                br.get("p50_ms"),
                br.get("p99_ms"),
                br["throughput_per_s"],
                _f(br["p50_ms"] / ir["p50_ms"]) if ir.get("p50_ms") and br.get("p50_ms") else "-",
                _f(br["p99_ms"] / ir["p99_ms"]) if ir.get("p99_ms") and br.get("p99_ms") else "-",
                _f(d["events_per_s"], 0),
                f"{_f(stage(i, 'hydrate_user'))} -> {_f(stage(b, 'hydrate_user'))}",
                f"{_f(stage(i, 'hydrate_candidates'))} -> {_f(stage(b, 'hydrate_candidates'))}",
                f"{_f(stage(i, 'retrieve'))} -> {_f(stage(b, 'retrieve'))}",
                (str(br["errors"]) if br["errors"] else ""),
            ]
        )
    lines += [
        f"Rank ({ing['candidates']} candidates) idle, then while one StreamEngagements call ingests at full "
        "speed (started 0.5 s before the Rank window, ended after it), same server, same run; stage means "
        "in ms (idle -> ingesting):",
        "",
    ]
    lines += _table(
        [
            "procs",
            "callers",
            "idle p50 ms",
            "idle p99",
            "idle calls/s",
            "ingesting p50 ms",
            "ingesting p99",
            "ingesting calls/s",
            "x p50",
            "x p99",
            "ingest events/s meanwhile",
            "hydrate_user",
            "hydrate_candidates",
            "retrieve",
            "errors",
        ],
        rows,
    ) + [""]
    live = [
        f"{r['workers']}p: {r['live_index_posts'].get('start')} -> {r['live_index_posts'].get('after_rank')} -> "
        f"{r['live_index_posts'].get('end')}"
        for r in ing["rows"]
        if r.get("available")
    ]
    if live:
        lines += [
            "Live index posts (moved by likes, comments, shares, saves; start -> after the Rank runs -> end): "
            + "; ".join(live)
            + ".",
            "",
        ]
    return lines + _live_graph(ing)


def _live_graph(ing: dict) -> list[str]:
    """Rank when every user has a live graph, beside Rank with empty graphs and the floor."""
    rows = []
    entries = None
    for r in ing["rows"]:
        g = r.get("rank_live_graph")
        if not r.get("available") or not g:
            continue
        entries = g["entries_per_user"]
        e = g.get("empty") or r["rank_idle"]
        i, k, f = e["rank"], g["rank"], g["floor"]

        def x(a, b):
            return _f(a / b) if a and b else "-"

        rows.append(
            [
                r["workers"],
                ing["rank_concurrency"],
                i.get("p50_ms"),
                i.get("p99_ms"),
                k.get("p50_ms"),
                k.get("p99_ms"),
                f.get("p50_ms"),
                f.get("p99_ms"),
                x(k.get("p50_ms"), i.get("p50_ms")),
                x(k.get("p50_ms"), f.get("p50_ms")),
                x(k.get("p99_ms"), f.get("p99_ms")),
                (g.get("cpu") or {}).get("server_ms_per_call"),
                (e.get("cpu") or {}).get("server_ms_per_call"),
            ]
        )
    if not rows:
        return []
    return [
        f"Rank when every user has a live community graph ({entries['joins']} groups joined since training, "
        f"{entries['leaves']} left, {entries['mutes']} muted: the graph is read in the user's round trip, and the "
        "joined groups' lists in a second one), beside the same Rank with empty graphs measured just before "
        "(same server, same live index) and the floor measured right after, same callers:",
        "",
        *_table(
            [
                "procs",
                "callers",
                "empty graphs p50 ms",
                "p99",
                "live graphs p50 ms",
                "p99",
                "floor p50 ms",
                "floor p99",
                "x p50 vs empty",
                "x p50 vs floor",
                "x p99 vs floor",
                "server CPU ms/call (live)",
                "(empty)",
            ],
            rows,
        ),
        "",
    ]


def write(out: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "latest.json", out_dir / "latest.md"
    for path, text in ((json_path, json.dumps(out, indent=1, default=_json_default) + "\n"), (md_path, markdown(out))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return json_path, md_path


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
