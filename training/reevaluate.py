"""Recompute a bundle's evaluation from the bundle and its data (`make evaluate`).

Everything the report depends on is in the bundle: the vectors and scorer that were
evaluated, split_ts, K, seeds, the index window and the plain-ALS parameters (manifest
params), the evaluated users and every method's top-K (eval_users.npy,
eval_rankings.npy). This reruns training/evaluate.py on them against the data directory
and says whether every number matches the saved report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core import contract
from core.bundle import load_bundle
from training.baselines import BaselineParams
from training.csvio import DataError
from training.evaluate import DAY, SplitPoint, evaluate
from training.features import Model
from training.params import AlsParams, EvalParams, ScorerParams, TrainParams
from training.split import adaptive_inner_split, split_events
from training.state import state_as_of
from training.world_fits import WorldFits


def _flatten(obj, prefix: str = "") -> dict[str, float]:
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}/"))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}{i}/"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix.rstrip("/")] = float(obj)
    return out


def reevaluate(bundle_dir: Path, data_dir: Path | None = None) -> tuple[dict, list[str]]:
    """(recomputed report, mismatches against the saved report.json)."""
    result = replay(bundle_dir, data_dir)
    saved = json.loads((bundle_dir / contract.REPORT_JSON_FILE).read_text())
    mismatches = []
    if not np.array_equal(result.users, np.load(bundle_dir / contract.EVAL_USERS_FILE)):
        mismatches.append("evaluated users differ")
    if not np.array_equal(result.rankings, np.load(bundle_dir / contract.EVAL_RANKINGS_FILE)):
        mismatches.append("rankings differ")
    return result.report, mismatches + numbers_differing(saved, result.report)


def numbers_differing(saved: dict, recomputed: dict) -> list[str]:
    """Every number of the windows, the pooled windows and the gate that differs."""
    gate = recomputed["gate"]
    if "split_points" not in saved["gate"]:  # saved before the gate pooled points: its first point's
        first_ts = recomputed["protocol"]["split_ts"]
        first = max(
            (w for w in recomputed["windows"] if w["window"]["split_ts"] == first_ts), key=lambda w: w["window"]["days"]
        )
        gate = {"metric": gate["metric"], "value": first["methods"]["pipeline"][gate["metric"]]["mean"]}
    want = _flatten({k: saved[k] for k in ("windows", "pooled", "gate")})
    got = _flatten({**{k: recomputed[k] for k in ("windows", "pooled")}, "gate": gate})
    return [
        f"{key}: saved {want.get(key)} recomputed {got.get(key)}"
        for key in sorted(set(want) | set(got))
        if key not in got or key not in want or abs(want[key] - got[key]) > 1e-9
    ]


def replay(bundle_dir: Path, data_dir: Path | None = None, capture: Path | None = None):
    """The bundle's evaluation run again (an EvalResult); with `capture`, the pipeline's
    candidates of every point written there too (training/candidate_capture.py)."""
    bundle = load_bundle(bundle_dir, verify=True)
    p = bundle.manifest.params
    data_dir = Path(data_dir or p["data_dir"])
    from training.train import (
        MIN_INNER_USERS,
        StageClock,
        data_fingerprint,
        load_on_engine,
        replay_points,
        scorer_refits,
    )

    if data_fingerprint(data_dir) != bundle.manifest.data_fingerprint:
        raise DataError(f"{data_dir}: not the data this bundle was trained on (fingerprint differs)")
    als = AlsParams(**p["als"])  # plain ALS's iterations, regularisation and seed, as trained
    # The later split points are refitted by the engine that trained the bundle, on the
    # events as that engine holds them, so the refit is the same computation.
    ds = load_on_engine(data_dir, als.engine, als.driver_users)
    e = p["eval"]
    eval_params = EvalParams(
        max_users=e["max_users"],
        seed=e["seed"],
        bootstrap=e["bootstrap"],
        ks=tuple(e["ks"]),
        windows_days=tuple(e["windows_days"]),
        split_points=e["split_points"],
        tune_users=e["tune_users"],
        refit_scorer=e.get("refit_scorer", False),  # absent: trained before the refit
    )
    hot_h = float(p["hot_half_life_h"])
    baselines = BaselineParams(**p["baselines"])
    model = Model(
        np.asarray(bundle[contract.USER_FACTORS_FILE]),
        np.asarray(bundle[contract.COMMUNITY_FACTORS_FILE]),
        np.asarray(bundle[contract.POST_VECTORS_FILE]),
        neighbours=np.asarray(bundle[contract.POST_NEIGHBOURS_FILE]),
        neighbour_sims=np.asarray(bundle[contract.POST_NEIGHBOUR_SIMS_FILE]),
    )
    first_ts, *later = (int(ts) for ts in p["split_points"])
    first = SplitPoint(
        first_ts, state_as_of(ds, first_ts, ds.memberships_derived, hot_h, als.engine), model, bundle.scorer
    )
    # The later points' scorers, refitted as training refitted them (if it did): the same
    # split, inner split, scorer parameters and pipeline ALS, from the data and the manifest.
    split = split_events(ds, p["test_fraction"], p["split_at"])
    longest_s = int(max(eval_params.windows_days) * DAY)
    inner = adaptive_inner_split(ds, split, longest_s, MIN_INNER_USERS)
    fit = {"trees": 100, **p["scorer_fit"]}  # no trees: trained before the flag, with 100
    trained = TrainParams(scorer=p["scorer"], scorer_fit=ScorerParams(**fit), als=als, eval=eval_params)
    window = p["index_window_applied_days"]
    fits = WorldFits(ds, als, hot_h)
    refit = scorer_refits(ds, split, inner, longest_s, window, trained, fits, StageClock(quiet=True), bundle.scorer)
    points = replay_points(first, later, fits, refit)
    saved = json.loads((bundle_dir / contract.REPORT_JSON_FILE).read_text())
    return evaluate(
        ds,
        points,
        int(p["data_end_ts"]),
        p["index_window_applied_days"],
        baselines,
        als,
        eval_params,
        saved.get("notes"),
        capture=capture,
    )
