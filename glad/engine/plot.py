"""Bar charts of a run's results (matplotlib, optional): base / novel / HM per dataset for
base-to-novel, source / each target / target average for the transfer protocols."""

from __future__ import annotations

import statistics
from collections import defaultdict

from glad.engine.results import harmonic_mean
from glad.io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def plot_protocol(records: list[dict], protocol: str, path: str) -> str:
    """The chart of `protocol`'s records; returns `path`."""
    if protocol == "base-to-novel":
        return plot_base_novel(records, path)
    return plot_transfer(records, protocol, path)


def plot_transfer(records: list[dict], protocol: str, path: str) -> str:
    """Seed-averaged accuracy per method on the source, each target and the target average."""
    plt = _pyplot()
    acc = defaultdict(list)
    for r in records:
        if r["protocol"] == protocol:
            acc[(r["method"], r["train_dataset"], r["eval_dataset"])].append(r["accuracy"])
    if not acc:
        raise ValueError(f"no {protocol} results to plot")
    methods = list(dict.fromkeys(m for m, _, _ in acc))
    source = next(iter(acc))[1]
    targets = list(dict.fromkeys(e for _, _, e in acc if e != source))
    columns = [f"{source}\n(source)", *targets, "target\naverage"]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(columns) * max(1, len(methods)) / 2), 4))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values = [statistics.fmean(acc.get((method, source, source), [0.0]))]
        means = [statistics.fmean(acc[(method, source, t)]) for t in targets if (method, source, t) in acc]
        values += [statistics.fmean(acc.get((method, source, t), [0.0])) for t in targets]
        values.append(statistics.fmean(means) if means else 0.0)
        ax.bar([x + (i - (len(methods) - 1) / 2) * width for x in range(len(columns))], values, width,
               label=method)
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(protocol.replace("-", " ").capitalize())
    return _save(fig, path)


def plot_base_novel(records: list[dict], path: str) -> str:
    """Draw seed-averaged Base, Novel and HM per (dataset, method); returns `path`."""
    plt = _pyplot()

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
    return _save(fig, path)
