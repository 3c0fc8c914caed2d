"""Results: one JSON record per (method, dataset, split, seed), and the paper-layout tables.

Tables follow the paper: base-to-novel gives Base / Novel / HM per dataset, where
HM = 2BN / (B + N) of the seed-averaged B and N, and an "Average" row holding the
mean B, the mean N and the HM of those two means (Table 1). Cross-dataset and
domain generalization give one row per method: the source accuracy, each target,
and the mean over targets (Tables 2 and 3). Cells read "mean ± std" over seeds
(sample standard deviation; 0 for a single seed).
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass

from glad.io import atomic_write_text


def harmonic_mean(base: float, novel: float) -> float:
    return 0.0 if base + novel == 0 else 2.0 * base * novel / (base + novel)


def read_records(path: str) -> list[dict]:
    """All records of a results JSONL file (missing file: none)."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:  # only the last line may be cut short by a kill
                raise ValueError(f"{path}: line {i + 1} is not valid JSON; fix or delete that line") from None
    return records


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def _cell(values: list[float] | None) -> str:
    if not values:
        return "-"
    mean, std = _mean_std(values)
    return f"{mean:.2f} ± {std:.2f}"


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join(["---"] * len(self.header)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return out.getvalue()


def _accuracies(records, **match) -> dict[tuple, list[float]]:
    """Accuracy lists keyed by (method, train_dataset, eval_dataset, split), one value per seed."""
    grouped = defaultdict(dict)
    for rec in records:
        if all(rec.get(k) == v for k, v in match.items()):
            key = (rec["method"], rec["train_dataset"], rec["eval_dataset"], rec["split"])
            grouped[key][rec["seed"]] = rec["accuracy"]  # a rerun of a seed replaces it
    return {k: [v[s] for s in sorted(v)] for k, v in grouped.items()}


def _ordered(values):
    return list(dict.fromkeys(values))


def base_to_novel_table(records: list[dict]) -> Table:
    acc = _accuracies(records, protocol="base-to-novel")
    methods = _ordered(k[0] for k in acc)
    datasets = _ordered(k[1] for k in acc)
    rows = []
    for method in methods:
        base_means, novel_means = [], []
        for ds in datasets:
            base, novel = acc.get((method, ds, ds, "base")), acc.get((method, ds, ds, "novel"))
            if not base and not novel:
                continue
            hm = "-"
            if base and novel:
                b, n = statistics.fmean(base), statistics.fmean(novel)
                base_means.append(b)
                novel_means.append(n)
                hm = f"{harmonic_mean(b, n):.2f}"
            rows.append([ds, method, _cell(base), _cell(novel), hm, str(max(len(base or []), len(novel or [])))])
        if base_means:
            b, n = statistics.fmean(base_means), statistics.fmean(novel_means)
            rows.append(["Average", method, f"{b:.2f}", f"{n:.2f}", f"{harmonic_mean(b, n):.2f}",
                         f"{len(base_means)} datasets"])
    return Table("Base-to-novel generalization (top-1 %, mean ± std over seeds)",
                 ["Dataset", "Method", "Base", "Novel", "HM", "Seeds"], rows)


def transfer_table(records: list[dict], protocol: str) -> Table:
    """Cross-dataset or domain-generalization: source, each target, average of targets."""
    acc = _accuracies(records, protocol=protocol)
    methods = _ordered(k[0] for k in acc)
    sources = _ordered(k[1] for k in acc)
    targets = _ordered(k[2] for k in acc if k[2] != k[1])
    header = ["Method"] + [f"{s} (source)" for s in sources] + targets + ["Target average"]
    rows = []
    for method in methods:
        row = [method]
        for src in sources:
            row.append(_cell(acc.get((method, src, src, "all"))))
        target_means = []
        for tgt in targets:
            vals = next((acc[(method, src, tgt, "all")] for src in sources if (method, src, tgt, "all") in acc), None)
            row.append(_cell(vals))
            if vals:
                target_means.append(statistics.fmean(vals))
        row.append(f"{statistics.fmean(target_means):.2f}" if target_means else "-")
        rows.append(row)
    title = {"cross-dataset": "Cross-dataset generalization", "domain-generalization": "Domain generalization"}
    return Table(f"{title.get(protocol, protocol)} (top-1 %, mean ± std over seeds)", header, rows)


def build_tables(records: list[dict]) -> list[Table]:
    protocols = _ordered(r["protocol"] for r in records)
    tables = []
    for protocol in protocols:
        if protocol == "base-to-novel":
            tables.append(base_to_novel_table(records))
        else:
            tables.append(transfer_table(records, protocol))
    return tables


def write_tables(records: list[dict], folder: str) -> dict[str, Table]:
    """Write `results.md` (every table) and `results-<protocol>.md` / `.csv` per protocol.

    Returns the tables by protocol.
    """
    tables = dict(zip(_ordered(r["protocol"] for r in records), build_tables(records), strict=True))
    atomic_write_text(os.path.join(folder, "results.md"), "\n".join(t.markdown() for t in tables.values()))
    for protocol, table in tables.items():
        atomic_write_text(os.path.join(folder, f"results-{protocol}.md"), table.markdown())
        atomic_write_text(os.path.join(folder, f"results-{protocol}.csv"), table.csv())
    return tables
