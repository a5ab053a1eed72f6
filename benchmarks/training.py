"""Training benchmark: the implicit and the Spark engine on the same generated logs.

    python -m benchmarks.training                  # default world (1.95M events): full `train` per engine + parity
    python -m benchmarks.training --world 10m      # the 10M-event log (scale 5): the engines' own stages
    make bench-training ARGS="--world 10m"

default: `python -m training train --engine E --quiet` per engine, wall clock and the
report's stage times, then the parity of the two bundles: the Spark bundle's pipeline
against the implicit bundle's, re-ranked on the same users and window and paired per
user (training/gate.py compare_on_candidate, the publish gate's comparison).

10m: the full pipeline (tuning, scorer, two evaluated split points) on 10M events takes
far longer than a benchmark should on 2 cores (docs/training.md says why), so by default
each engine runs the stages it replaces, in a fresh process: load (read, validate, index; the events on Spark for spark), the
state at the first split point (its per-post and per-user arrays aggregated on Spark for
spark), and the ALS stage there (aggregation, the fit with the
shipped settings, the per-post weights) plus the post vectors.

--full runs the whole `train` of both engines and their parity on the 10m world too, as
for the default world (a bigger machine's run).

Worlds are generated with a fixed end into var/bench/training/<world>/ (git-ignored) and
reused. Results: benchmarks/results/training.json and training.md (one entry per world,
replaced by a new run of that world), with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.worlds import BENCH_VAR, ROOT, WORLD_END, log

RESULTS = ROOT / "benchmarks" / "results"
WORLDS = {"default": [], "10m": ["--scale", "5"]}  # generate flags
ENGINES = ("implicit", "spark")


def machine() -> dict:
    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    import pyspark

    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "java": java,
        "pyspark": pyspark.__version__,
        "spark_master": "local[2]",
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def world_dir(world: str) -> Path:
    data = BENCH_VAR / "training" / world / "data"
    if not (data / "events.csv").exists():
        log(f"generating the {world} world into {data}")
        cmd = [sys.executable, "-m", "training", "generate", "--out", str(data), "--end", str(WORLD_END)]
        subprocess.run(cmd + WORLDS[world], check=True)
    return data


def full_train(data: Path, engine: str) -> dict:
    models = data.parent / f"models-{engine}"
    cmd = [sys.executable, "-m", "training", "train", "--data", str(data), "--models", str(models)]
    t0 = time.perf_counter()
    run = subprocess.run([*cmd, "--engine", engine, "--quiet"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"train --engine {engine} failed:\n{run.stderr[-3000:]}")
    bundle = models / sorted(p.name for p in models.iterdir() if not p.name.startswith("."))[-1]
    report = json.loads((bundle / "report.json").read_text())
    return {
        "bundle": str(bundle),
        "wall_s": round(wall, 1),
        "stage_seconds": report["training"]["stage_seconds"],
        "gate_ndcg10": round(report["gate"]["value"], 4),
    }


def stages(data: Path, engine: str) -> dict:
    """The stages an engine replaces, timed in this process (run in a fresh one per engine)."""
    from training.als import fit_community_als
    from training.embeddings import post_embeddings
    from training.event_times import event_times
    from training.params import AlsParams, TrainParams
    from training.split import split_events
    from training.state import state_as_of
    from training.train import load_on_engine

    out = {}
    t = time.perf_counter()
    ds = load_on_engine(data, engine)
    out["load_s"] = round(time.perf_counter() - t, 1)
    split = split_events(ds, TrainParams().test_fraction)
    t = time.perf_counter()
    state = state_as_of(ds, split.split_ts, ds.memberships_derived, engine=engine)
    out["state_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    als = fit_community_als(ds, state, AlsParams(engine=engine))
    post_embeddings(ds, als)
    out["als_and_post_vectors_s"] = round(time.perf_counter() - t, 1)
    times = event_times(ds)  # every event (the Spark engine's driver holds the positive ones)
    out["events"] = times.count
    out["train_events"] = times.count_before(split.split_ts)
    out["events_on_driver"] = int(len(ds.e_ts))
    out["peak_rss_mb_python"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def parity(spark_bundle: str, implicit_bundle: str, data: Path) -> dict:
    from training.gate import compare_on_candidate

    c = compare_on_candidate(Path(spark_bundle), Path(implicit_bundle), data)
    return {
        "metric": "ndcg@10, first split point, next 7 days",
        "spark": round(c.candidate, 4),
        "implicit": round(c.serving, 4),
        "spark_minus_implicit_ci95": [round(c.ci95[0], 4), round(c.ci95[1], 4)],
        "verdict": c.verdict,
        "users": c.users,
    }


def markdown(results: dict) -> str:
    lines = ["# Training benchmark (python -m benchmarks.training)", ""]
    for world, r in results.items():
        m = r["machine"]
        lines += [
            f"## {world} world ({r['events']:,} events), {m['date_utc']}",
            "",
            f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory_gb']} GB; Python {m['python']}, "
            f"{m['java']}, pyspark {m['pyspark']} in {m['spark_master']}; load average at start "
            f"{m['load_avg_at_start']}.",
            "",
        ]
        if "full" in r:
            lines += ["| engine | train wall clock (s) | load | tune | als | scorer | evaluate | gate NDCG@10 |"]
            lines += ["|---|---|---|---|---|---|---|---|"]
            for e, f in r["full"].items():
                s = f["stage_seconds"]
                lines.append(
                    f"| {e} | {f['wall_s']} | {s['load']} | {s['tune']} | {s['als']} | {s['scorer']} | "
                    f"{s['evaluate']} | {f['gate_ndcg10']} |"
                )
            p = r["parity"]
            lo, hi = p["spark_minus_implicit_ci95"]
            lines += [
                "",
                f"Parity ({p['metric']}, {p['users']} users, paired): spark {p['spark']} vs implicit "
                f"{p['implicit']}, difference [{lo:+.4f}, {hi:+.4f}]: {p['verdict']}.",
                "",
            ]
        if "stages" in r:
            lines += [
                "| engine | load (s) | state at the split (s) | ALS stage + post vectors (s) | peak RSS of Python (MB) |"
            ]
            lines += ["|---|---|---|---|---|"]
            for e, s in r["stages"].items():
                lines.append(
                    f"| {e} | {s['load_s']} | {s['state_s']} | {s['als_and_post_vectors_s']} | {s['peak_rss_mb_python']} |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.splitlines()[0])
    ap.add_argument("--world", choices=sorted(WORLDS), default="default")
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma list of " + ",".join(ENGINES))
    ap.add_argument("--stages-only", action="store_true", help="the engines' stages alone (the 10m world's default)")
    ap.add_argument("--full", action="store_true", help="the whole train of each engine on the 10m world too")
    ap.add_argument("--stage-run", choices=ENGINES, help=argparse.SUPPRESS)  # the child process of one engine
    args = ap.parse_args(argv)
    data = world_dir(args.world)
    if args.stage_run:
        print(json.dumps(stages(data, args.stage_run)))
        return
    engines = [e for e in args.engines.split(",") if e]
    result: dict = {"machine": machine()}
    if (args.world == "default" or args.full) and not args.stages_only:
        result["full"] = {}
        for e in engines:
            log(f"{args.world}: train --engine {e}")
            result["full"][e] = full_train(data, e)
            log(f"{e}: {result['full'][e]['wall_s']} s")
        if set(ENGINES) <= set(engines):
            result["parity"] = parity(result["full"]["spark"]["bundle"], result["full"]["implicit"]["bundle"], data)
            log(f"parity: {result['parity']}")
    result["stages"] = {}
    for e in engines:
        log(f"{args.world}: stages of {e}")
        cmd = [sys.executable, "-m", "benchmarks.training", "--world", args.world, "--stage-run", e]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"stages of {e} failed:\n{run.stderr[-3000:]}")
        result["stages"][e] = json.loads(run.stdout.strip().splitlines()[-1])
        log(f"{e}: {result['stages'][e]}")
    result["events"] = next(iter(result["stages"].values()))["events"]
    path = RESULTS / "training.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[args.world] = result
    path.write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "training.md").write_text(markdown(results))
    log(f"written {path} and training.md")


if __name__ == "__main__":
    main()
