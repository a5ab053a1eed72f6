"""Two bundles trained on the same data, paired (`make compare A=... B=...`).

"Did my change help?" is a paired question: the same users, the same split points and
windows, one model's NDCG@10 against the other's. Both bundles keep every evaluated
user and every method's top K (eval_users.npy, eval_rankings.npy), so the comparison
needs no retraining: targets are recomputed from the data exactly as evaluation made
them, and the per-user differences of the pooled windows get a bootstrap interval. The
bundles must come from the same data (fingerprint) and the same protocol (split points,
windows, evaluation seed): otherwise their users differ and nothing is paired.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import contract
from training.csvio import DataError
from training.evaluate import (
    DAY,
    GATE_METRIC,
    bootstrap_ci,
    catalogue_rows,
    per_user_metrics,
    saved_method,
    seen_matrix,
    target_matrix,
    verdict,
)

PROTOCOL_KEYS = ("split_points", "data_end_ts", "index_window_applied_days")


@dataclass
class Paired:
    days: float
    users: int
    a: float
    b: float
    difference: float
    ci95: tuple[float, float]

    @property
    def verdict(self) -> str:
        return verdict(*self.ci95).replace("better", "B better").replace("worse", "B worse")


def _manifest(bundle: Path) -> dict:
    path = bundle / contract.MANIFEST_FILE
    if not path.is_file():
        raise DataError(f"{bundle}: not a model bundle (no {contract.MANIFEST_FILE})")
    return json.loads(path.read_text())


def compare(
    a: Path, b: Path, data_dir: Path | None = None, method: str = "pipeline", draws: int = 1000
) -> list[Paired]:
    """Per evaluation window, pooled over the split points: B's metric minus A's."""
    from training.train import data_fingerprint, load_on_engine

    ma, mb = _manifest(a), _manifest(b)
    pa, pb = ma["params"], mb["params"]
    if ma["data_fingerprint"] != mb["data_fingerprint"]:
        raise DataError(f"{a} and {b} were trained on different data (fingerprints differ): nothing is paired")
    for key in PROTOCOL_KEYS:
        if pa[key] != pb[key]:
            raise DataError(f"{a} and {b} differ in {key} ({pa[key]} vs {pb[key]}): the same protocol is needed")
    for key in ("windows_days", "ks"):
        if pa["eval"][key] != pb["eval"][key]:
            raise DataError(f"{a} and {b} differ in eval {key}: the same protocol is needed")
    users = np.load(a / contract.EVAL_USERS_FILE)
    if not np.array_equal(users, np.load(b / contract.EVAL_USERS_FILE)):
        raise DataError(f"{a} and {b} evaluated different users")
    data_dir = Path(data_dir or pa["data_dir"])
    if data_fingerprint(data_dir) != ma["data_fingerprint"]:
        raise DataError(f"{data_dir}: not the data these bundles were trained on (fingerprint differs)")
    ra, rb = (np.load(x / contract.EVAL_RANKINGS_FILE)[:, saved_method(x, method)] for x in (a, b))
    ds = load_on_engine(data_dir, "implicit")
    ks = tuple(pa["eval"]["ks"])
    end = int(pa["data_end_ts"])
    out = []
    for days in pa["eval"]["windows_days"]:
        va, vb = [], []
        for j, ts in enumerate(pa["split_points"]):
            before = ds.e_ts < ts
            catalogue = catalogue_rows(ds, ts, pa["index_window_applied_days"])
            seen = seen_matrix(ds, before)
            targets = target_matrix(ds, ~before & (ds.e_ts < min(end, ts + int(days * DAY))), seen, catalogue)
            u = users[j][users[j] >= 0]
            judged = np.flatnonzero(np.diff(targets[u].indptr) > 0)
            for rankings, values in ((ra, va), (rb, vb)):
                values.append(per_user_metrics(rankings[j][judged], targets, u[judged], ds, ks)[GATE_METRIC])
        va, vb = np.concatenate(va), np.concatenate(vb)
        lo, hi = bootstrap_ci(vb - va, draws, np.random.default_rng(0))
        out.append(Paired(days, len(va), float(va.mean()), float(vb.mean()), float((vb - va).mean()), (lo, hi)))
    return out
