"""The experiment report: engagement per served item, per variant, with bootstrap intervals.

It reads the experiment log (contract.EXPERIMENT_LOG_KEY): one served entry per Rank
answer of the experiment (how many posts a variant showed a user) and one attributed
entry per engagement with a post the experiment served (written by the write path, once
per event id). Users are the unit the experiment randomises, so the intervals resample
users: each bootstrap draw reweights every user of a variant (a multinomial draw over
them) and recomputes the ratio of sums (engagements / served items); the difference
between the variants resamples both independently.

Verdict: on the positive engagement rate (likes, comments, shares and saves per served
item) and, as a guardrail, the negative one (hides and reports). The candidate is better
when the interval of its positive difference is above zero and its negative difference
is not above zero; worse when either points the other way; otherwise there is no
difference beyond noise. The verdict's intervals are at `confidence` for the pair
(Bonferroni: each at 1 - (1 - confidence) / 2), so two identical models are called
different at most 1 - confidence of the time; the tables show 95% intervals.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis

from core import contract

# Rows of the report: (name, kinds counted). "positive" and "negative" drive the verdict.
RATES = (
    ("likes", ("like",)),
    ("comments", ("comment",)),
    ("hides", ("hide",)),
    ("reports", ("report",)),
    ("positive", ("like", "comment", "share", "save")),
    ("negative", ("hide", "report")),
)
KIND_INDEX = {k: i for i, k in enumerate(contract.KINDS)}
READ_BATCH = 10_000


@dataclass
class VariantData:
    users: list[str]
    served: np.ndarray  # f8 [users] items served
    counts: np.ndarray  # f8 [users, len(KINDS)] attributed engagements


def read_log(client: redis.Redis, experiment_id: str | None) -> tuple[str, dict[str, VariantData]]:
    """(experiment id, per-variant data) from the experiment log; the id defaults to the
    running experiment, else the last one stopped, else the newest in the log."""
    entries = []
    last = "-"
    while True:
        batch = client.xrange(contract.EXPERIMENT_LOG_KEY, min=last, max="+", count=READ_BATCH)
        if last != "-":
            batch = batch[1:]  # `min` is inclusive: the first entry was read last time
        if not batch:
            break
        entries += batch
        last = batch[-1][0].decode() if isinstance(batch[-1][0], bytes) else batch[-1][0]
    experiment_id = experiment_id or default_experiment(client, entries)
    if experiment_id is None:
        raise ValueError("the experiment log is empty: no experiment has served anything yet")
    served: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for _, fields in entries:
        (kind, value), *_ = fields.items()
        kind = kind.decode()
        if kind == contract.LOG_SERVED:
            e = contract.decode_log(value, contract.LOG_SERVED_FIELDS)
            if e["experiment"] == experiment_id:
                served[e["variant"]][e["user_id"]] += float(e["items"])
        elif kind == contract.LOG_ATTRIBUTED:
            e = contract.decode_log(value, contract.LOG_ATTRIBUTED_FIELDS)
            if e["experiment"] == experiment_id and e["kind"] in KIND_INDEX:
                row = counts[e["variant"]].setdefault(e["user_id"], np.zeros(len(contract.KINDS)))
                row[KIND_INDEX[e["kind"]]] += 1
    if not served:
        raise ValueError(f"experiment {experiment_id} has served nothing (no entry in the experiment log)")
    out = {}
    for variant in contract.VARIANTS:
        users = sorted(served.get(variant, {}))
        out[variant] = VariantData(
            users=users,
            served=np.array([served[variant][u] for u in users], dtype=np.float64),
            counts=np.array(
                [counts[variant].get(u, np.zeros(len(contract.KINDS))) for u in users], dtype=np.float64
            ).reshape(len(users), len(contract.KINDS)),
        )
    return experiment_id, out


def default_experiment(client: redis.Redis, entries) -> str | None:
    raw = client.get(contract.EXPERIMENT_KEY)
    if raw:
        try:
            return contract.ExperimentDefinition.from_json(raw).id
        except contract.ContractError:
            pass
    raw = client.get(contract.EXPERIMENT_STOPPED_KEY)
    if raw:
        try:
            return json.loads(raw)["definition"]["id"]
        except (ValueError, KeyError, TypeError):
            pass
    if entries:
        (_, value), *_ = entries[-1][1].items()
        return value.decode().split(contract.LOG_SEP)[0]
    return None


def bootstrap_ratios(served: np.ndarray, events: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """`draws` bootstrap values of sum(events) / sum(served) over resampled users."""
    n = len(served)
    if n == 0:
        return np.full(draws, np.nan)
    out = np.empty(draws)
    chunk = max(1, 2_000_000 // max(n, 1))
    for lo in range(0, draws, chunk):
        k = min(chunk, draws - lo)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=k).astype(np.float64)
        denom = weights @ served
        out[lo : lo + k] = np.where(denom > 0, (weights @ events) / np.maximum(denom, 1e-12), np.nan)
    return out


def analyse(data: dict[str, VariantData], draws: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Per-variant rates with 95% intervals, candidate - control differences, verdict."""
    tail = (1 - confidence) / 4 * 100  # two-sided, two rates (Bonferroni)
    rng = np.random.default_rng(seed)
    variants: dict[str, dict] = {}
    boots: dict[str, dict[str, np.ndarray]] = {}
    for variant, d in data.items():
        row = {"users": len(d.users), "served": int(d.served.sum()), "rates": {}}
        boots[variant] = {}
        for name, kinds in RATES:
            events = d.counts[:, [KIND_INDEX[k] for k in kinds]].sum(axis=1) if len(d.users) else np.zeros(0)
            total = float(d.served.sum())
            rate = float(events.sum() / total) if total else float("nan")
            b = bootstrap_ratios(d.served, events, draws, rng)
            boots[variant][name] = b
            row["rates"][name] = {
                "events": int(events.sum()),
                "rate": rate,
                "ci95": [float(np.nanpercentile(b, 2.5)), float(np.nanpercentile(b, 97.5))] if total else [None, None],
            }
        variants[variant] = row
    differences = {}
    ctl, cand = contract.VARIANT_CONTROL, contract.VARIANT_CANDIDATE
    comparable = variants[ctl]["served"] > 0 and variants[cand]["served"] > 0
    for name, _ in RATES:
        if not comparable:
            continue
        diff = boots[cand][name] - boots[ctl][name]
        differences[name] = {
            "difference": variants[cand]["rates"][name]["rate"] - variants[ctl]["rates"][name]["rate"],
            "ci95": [float(np.nanpercentile(diff, 2.5)), float(np.nanpercentile(diff, 97.5))],
            "verdict_ci": [float(np.nanpercentile(diff, tail)), float(np.nanpercentile(diff, 100 - tail))],
        }
    return {
        "variants": variants,
        "differences": differences,
        "verdict": verdict(differences),
        "confidence": confidence,
        "draws": draws,
    }


def verdict(differences: dict) -> str:
    if not differences:
        return "no verdict: one variant has served nothing"
    pos, neg = differences["positive"]["verdict_ci"], differences["negative"]["verdict_ci"]
    if pos[1] < 0:
        return "candidate worse: fewer positive engagements per served item beyond noise"
    if neg[0] > 0:
        return "candidate worse: more hides and reports per served item beyond noise"
    if pos[0] > 0:
        return "candidate better: more positive engagements per served item beyond noise"
    return "no difference beyond noise"


def to_markdown(experiment_id: str, analysis: dict, plot_name: str | None) -> str:
    lines = [f"# Experiment {experiment_id}", ""]
    lines += [f"**Verdict: {analysis['verdict']}**", ""]
    lines += [
        "Engagements attributed to the variant that served the post to that user, per served item; "
        f"95% intervals from {analysis['draws']} bootstrap draws over users; the verdict's at "
        f"{analysis['confidence']:.1%} for the positive and negative rates together.",
        "",
    ]
    header = "| variant | users | served items | " + " | ".join(f"{n} per item" for n, _ in RATES) + " |"
    lines += [header, "|" + "---|" * (3 + len(RATES))]
    for variant, row in analysis["variants"].items():
        cells = []
        for name, _ in RATES:
            r = row["rates"][name]
            cells.append("n/a" if r["ci95"][0] is None else f"{r['rate']:.4f} [{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]")
        lines.append(f"| {variant} | {row['users']} | {row['served']} | " + " | ".join(cells) + " |")
    if analysis["differences"]:
        lines += ["", "Candidate minus control:", "", "| rate | difference | 95% interval |", "|---|---|---|"]
        for name, d in analysis["differences"].items():
            lines.append(f"| {name} per item | {d['difference']:+.4f} | [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] |")
    if plot_name:
        lines += ["", f"![per-variant engagement rates]({plot_name})"]
    return "\n".join(lines) + "\n"


def plot(analysis: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no screen: render to a file
    import matplotlib.pyplot as plt

    names = [n for n, _ in RATES]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(len(analysis["variants"]), 1)
    x = np.arange(len(names))
    for i, (variant, row) in enumerate(analysis["variants"].items()):
        rates = [row["rates"][n] for n in names]
        mean = np.array([r["rate"] for r in rates], dtype=float)
        lo = np.array([r["ci95"][0] if r["ci95"][0] is not None else np.nan for r in rates], dtype=float)
        hi = np.array([r["ci95"][1] if r["ci95"][1] is not None else np.nan for r in rates], dtype=float)
        ax.bar(
            x + i * width,
            mean,
            width,
            yerr=[np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)],
            capsize=3,
            label=f"{variant} ({row['users']} users)",
        )
    ax.set_xticks(x + width * (len(analysis["variants"]) - 1) / 2, [f"{n}\nper item" for n in names])
    ax.set_ylabel("engagements per served item")
    ax.set_title(analysis["verdict"], fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    client: redis.Redis,
    out_dir: Path | None,
    experiment_id: str | None = None,
    draws: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[str, dict, Path]:
    """Read, analyse, write report.md and report.png into out_dir (default
    reports/<experiment id>/); returns (experiment id, analysis, markdown path)."""
    experiment_id, data = read_log(client, experiment_id)
    analysis = analyse(data, draws=draws, seed=seed, confidence=confidence)
    out = Path(out_dir) if out_dir else Path("reports") / experiment_id
    out.mkdir(parents=True, exist_ok=True)
    plot(analysis, out / "report.png")
    md = out / "report.md"
    md.write_text(to_markdown(experiment_id, analysis, "report.png"))
    (out / "report.json").write_text(json.dumps({"experiment": experiment_id, **analysis}, indent=1))
    return experiment_id, analysis, md
