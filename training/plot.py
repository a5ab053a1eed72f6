"""The report's picture: every method's NDCG@10 and recall@50 with their intervals, per window."""

from __future__ import annotations

from pathlib import Path

PLOT_METRICS = ("ndcg@10", "recall@50")


def plot_report(report: dict, path: Path) -> Path:
    """Write a PNG: one panel per metric, one group of bars per method, one bar per window."""
    import matplotlib

    matplotlib.use("Agg")  # no screen: render to a file
    import matplotlib.pyplot as plt
    import numpy as np

    windows = report["windows"] + report.get("pooled", [])
    methods = list(windows[0]["methods"])
    fig, axes = plt.subplots(len(PLOT_METRICS), 1, figsize=(max(8, 1.1 * len(methods)), 7), sharex=True)
    width = 0.8 / len(windows)
    x = np.arange(len(methods))
    for ax, metric in zip(axes, PLOT_METRICS):
        for i, w in enumerate(windows):
            info = w["window"]
            cells = [w["methods"].get(m, {}).get(metric) for m in methods]
            mean = np.array([c["mean"] if c else np.nan for c in cells])
            lo = np.array([c["ci95"][0] if c else np.nan for c in cells])
            hi = np.array([c["ci95"][1] if c else np.nan for c in cells])
            ax.bar(
                x + (i - (len(windows) - 1) / 2) * width,
                mean,
                width,
                yerr=[mean - lo, hi - mean],
                capsize=2,
                label=(
                    f"all split points, next {info['days']:g} d ({info['users']} pairs)"
                    if info["split_ts"] == "all"
                    else f"split {info['split_ts']}, next {info['days']:g} d ({info['users']} users)"
                ),
            )
        ax.set_ylabel(metric)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    axes[-1].set_xticks(x)
    axes[-1].set_xticklabels(methods, rotation=30, ha="right")
    axes[0].set_title(f"{report.get('model_version', '')}: mean and 95% bootstrap interval over users")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
