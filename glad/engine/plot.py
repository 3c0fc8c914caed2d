"""Charts of a run's results (matplotlib, optional), one per protocol, in the tables' terms:

* base-to-novel: Base, Novel and HM panels; a group per dataset and the Average group; a bar
  per method in the ablation's order; error bars are the population std over seeds;
* cross-dataset / domain generalization: the source, each target and the target average;
* few-shot: accuracy against the number of shots, a panel per dataset and the Average;
* training curves (`plot_training`): from every job's metrics.jsonl, the loss at theta and at
  theta + eps, cos(g, g') and the conflict rate per epoch, a colour per method.

Legends sit outside the axes, so they cover nothing.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from glad.engine.results import _method_order, harmonic_mean
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
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _seed_values(records, protocol, key):
    """{key(record): [accuracy per seed]} for one protocol (a rerun of a seed replaces it)."""
    grouped = defaultdict(dict)
    for r in records:
        if r["protocol"] == protocol:
            grouped[key(r)][r["seed"]] = r["accuracy"]
    return {k: [v[s] for s in sorted(v)] for k, v in grouped.items()}


def _mean_std(values):
    return (statistics.fmean(values), statistics.pstdev(values)) if values else (math.nan, 0.0)


def _grouped_bars(ax, groups, methods, value, title):
    """Bars per group (x) and method (colour); value(group, method) -> (mean, std or None)."""
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        stats = [value(g, method) for g in groups]
        means = [m for m, _ in stats]
        errors = [math.nan if e is None else e for _, e in stats]  # NaN: no bar drawn (an average)
        xs = [x + (i - (len(methods) - 1) / 2) * width for x in range(len(groups))]
        has_error = any(e == e and e > 0 for e in errors)
        ax.bar(xs, means, width, yerr=errors if has_error else None, capsize=2, label=method)
    ax.set_xticks(range(len(groups)), groups, fontsize=8, rotation=30, ha="right")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)


def plot_protocol(records: list[dict], protocol: str, path: str) -> str:
    """The chart of `protocol`'s records; returns `path`."""
    draw = {"base-to-novel": plot_base_novel, "few-shot": plot_few_shot}.get(protocol)
    if draw is not None:
        return draw(records, path)
    return plot_transfer(records, protocol, path)


def plot_base_novel(records: list[dict], path: str) -> str:
    """Base, Novel and HM per dataset and on average, one bar per method."""
    acc = _seed_values(records, "base-to-novel", lambda r: (r["method"], r["train_dataset"], r["split"]))
    if not acc:
        raise ValueError("no base-to-novel results to plot")
    methods = _method_order(k[0] for k in acc)
    datasets = list(dict.fromkeys(k[1] for k in acc))
    groups = [*datasets, "Average"]

    def split_mean(ds, method, split):
        if ds == "Average":
            means = [statistics.fmean(acc[(method, d, split)]) for d in datasets if (method, d, split) in acc]
            return (statistics.fmean(means) if means else math.nan), None
        return _mean_std(acc.get((method, ds, split), []))

    def hm(ds, method):
        b, n = split_mean(ds, method, "base")[0], split_mean(ds, method, "novel")[0]
        return (harmonic_mean(b, n) if not (math.isnan(b) or math.isnan(n)) else math.nan), None

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(max(9, 1.0 * len(groups) * 3), 4), sharey=True)
    _grouped_bars(axes[0], groups, methods, lambda g, m: split_mean(g, m, "base"), "Base")
    _grouped_bars(axes[1], groups, methods, lambda g, m: split_mean(g, m, "novel"), "Novel")
    _grouped_bars(axes[2], groups, methods, hm, "HM")
    axes[2].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Base-to-novel generalization (mean ± population std over seeds)")
    return _save(fig, path)


def plot_transfer(records: list[dict], protocol: str, path: str) -> str:
    """Accuracy per method on the source, each target and the target average."""
    acc = _seed_values(records, protocol, lambda r: (r["method"], r["train_dataset"], r["eval_dataset"]))
    if not acc:
        raise ValueError(f"no {protocol} results to plot")
    methods = _method_order(k[0] for k in acc)
    source = next(iter(acc))[1]
    targets = list(dict.fromkeys(e for _, _, e in acc if e != source))
    groups = [f"{source} (source)", *targets, "target average"]

    def value(group, method):
        if group == "target average":
            means = [statistics.fmean(acc[(method, source, t)]) for t in targets if (method, source, t) in acc]
            return (statistics.fmean(means) if means else math.nan), None
        name = source if group.endswith("(source)") else group
        return _mean_std(acc.get((method, source, name), []))

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(groups) * max(1, len(methods)) / 2), 4))
    _grouped_bars(ax, groups, methods, value, protocol.replace("-", " ").capitalize())
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _save(fig, path)


def plot_few_shot(records: list[dict], path: str) -> str:
    """Accuracy against shots: a panel per dataset and the Average, a line per method."""
    acc = _seed_values(records, "few-shot", lambda r: (r["method"], r["train_dataset"], r.get("shots", 16)))
    if not acc:
        raise ValueError("no few-shot results to plot")
    methods = _method_order(k[0] for k in acc)
    datasets = list(dict.fromkeys(k[1] for k in acc))
    shots = sorted({k[2] for k in acc})
    panels = ["Average", *datasets]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for method in methods:
            means, errors = [], []
            for k in shots:
                if panel == "Average":
                    vals = [statistics.fmean(acc[(method, d, k)]) for d in datasets if (method, d, k) in acc]
                    means.append(statistics.fmean(vals) if vals else math.nan)
                    errors.append(0.0)
                else:
                    m, e = _mean_std(acc.get((method, panel, k), []))
                    means.append(m)
                    errors.append(e)
            ax.errorbar(shots, means, yerr=errors if any(errors) else None, marker="o", capsize=2,
                        label=method)
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("shots per class", fontsize=8)
        ax.set_ylabel("top-1 accuracy (%)", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle("Few-shot classification (mean ± population std over seeds)")
    return _save(fig, path)


def plot_training(folder: str, path: str) -> str:
    """Training curves of every job under `folder` that left a metrics.jsonl."""
    import os

    from glad.engine.metrics import FILE_NAME, read_metrics, summarize

    jobs = []
    for root, _, files in os.walk(folder):
        if FILE_NAME in files:
            rel = os.path.relpath(root, folder).split(os.sep)
            jobs.append((rel[0], "/".join(rel[1:]), os.path.join(root, FILE_NAME)))
    if not jobs:
        raise ValueError(f"no {FILE_NAME} under {folder}: nothing was trained there")
    methods = _method_order(m for m, _, _ in jobs)
    plt = _pyplot()
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for method, _, file in sorted(jobs):
        rows = read_metrics(file)
        steps = [r["step"] for r in rows]
        colour = colours[method]
        axes[0].plot(steps, [r["loss"] for r in rows], color=colour, lw=0.8, alpha=0.7)
        if any(r.get("perturbed_loss") is not None for r in rows):
            axes[0].plot(steps, [r["perturbed_loss"] for r in rows], color=colour, lw=0.8, alpha=0.7, ls="--")
        if any(r.get("cos") is not None for r in rows):
            axes[1].plot(steps, [r["cos"] for r in rows], color=colour, lw=0.8, alpha=0.7)
        epochs = [e for e in summarize(file)["epochs"] if e["conflict_rate"] is not None]
        if epochs:
            axes[2].plot([e["epoch"] + 1 for e in epochs], [100 * e["conflict_rate"] for e in epochs],
                         color=colour, marker="o", ms=3, lw=0.8, alpha=0.7)
    axes[0].set(title="loss at θ (solid) and θ + ε (dashed)", xlabel="step", ylabel="loss")
    axes[1].set(title="cos(g, g')", xlabel="step", ylim=(-1.05, 1.05))
    axes[1].axhline(0.0, color="grey", lw=0.5)
    axes[2].set(title="conflict rate (projection fired)", xlabel="epoch", ylabel="% of steps", ylim=(-2, 102))
    from matplotlib.lines import Line2D

    handles = [Line2D([0], [0], color=colours[m], label=m) for m in methods]
    fig.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"Training metrics of {len(jobs)} job(s)")
    return _save(fig, path)
