"""A bar chart of base / novel / HM per dataset (matplotlib, optional)."""

from __future__ import annotations

import statistics
from collections import defaultdict

from glad.engine.results import harmonic_mean
from glad.io import atomic_path


def plot_base_novel(records: list[dict], path: str) -> str:
    """Draw seed-averaged Base, Novel and HM per (dataset, method); returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = defaultdict(list)
    for r in records:
        if r["protocol"] == "base-to-novel":
            acc[(r["train_dataset"], r["method"], r["split"])].append(r["accuracy"])
    groups = sorted({(d, m) for d, m, _ in acc})
    if not groups:
        raise ValueError("no base-to-novel results to plot")
    labels, bars = [], {"Base": [], "Novel": [], "HM": []}
    for ds, method in groups:
        b = statistics.fmean(acc.get((ds, method, "base"), [0.0]))
        n = statistics.fmean(acc.get((ds, method, "novel"), [0.0]))
        labels.append(f"{ds}\n{method}")
        bars["Base"].append(b)
        bars["Novel"].append(n)
        bars["HM"].append(harmonic_mean(b, n))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups)), 4))
    width = 0.27
    for i, (name, values) in enumerate(bars.items()):
        ax.bar([x + (i - 1) * width for x in range(len(groups))], values, width, label=name)
    ax.set_xticks(range(len(groups)), labels, fontsize=8)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title("Base-to-novel generalization")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path
