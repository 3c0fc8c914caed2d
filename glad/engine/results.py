"""Results: one JSON record per (method, dataset, split, seed), and the paper-layout tables.

Tables follow the paper: base-to-novel gives Base / Novel / HM per dataset, where
HM = 2BN / (B + N) of the seed-averaged B and N, and an "Average" row holding the
mean B, the mean N and the HM of those two means (Table 1). Cross-dataset and
domain generalization give one row per method: the source accuracy, each target,
and the mean over targets (Tables 2 and 3). Cells read "mean ± std" over seeds, the
population standard deviation (numpy's default, as CoOp's parse script computes it);
zero-shot CLIP has no seeds and shows its accuracy alone. Rows are grouped by dataset
and methods follow the ablation's order. CSV files hold the same numbers as numbers
(a mean and a std column per cell).
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
    """Mean and population standard deviation (numpy's default, ddof=0, as CoOp's parse script)."""
    return statistics.fmean(values), statistics.pstdev(values)


def _cell(values: list[float] | None, seeded: bool = True) -> str:
    """"mean ± std" over seeds; the mean alone for a method without seeds (zero-shot)."""
    if not values:
        return "-"
    mean, std = _mean_std(values)
    return f"{mean:.2f} ± {std:.2f}" if seeded else f"{mean:.2f}"


def _numbers(values: list[float] | None) -> list[str]:
    """CSV cells: mean and std as plain numbers (empty when there is no value)."""
    if not values:
        return ["", ""]
    mean, std = _mean_std(values)
    return [f"{mean:.4f}", f"{std:.4f}"]


@dataclass
class Table:
    """A paper-layout table: Markdown rows (grouped, "mean ± std" cells) and CSV rows (numbers)."""

    title: str
    header: list[str]
    rows: list[list[str]]
    csv_header: list[str]
    csv_rows: list[list[str]]

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join(["---"] * len(self.header)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(self.csv_header)
        writer.writerows(self.csv_rows)
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


def _method_order(names) -> list[str]:
    """Methods in the ablation's order (Table 4: zeroshot, lora, ..., glad), others after."""
    from glad.config import METHODS

    names = _ordered(names)
    known = [m for m in METHODS if m in names]
    return known + [m for m in names if m not in known]


def _seeded(method: str) -> bool:
    from glad.config import METHODS

    return METHODS[method].train if method in METHODS else True


STD_NOTE = "mean ± population std over seeds"


def base_to_novel_table(records: list[dict]) -> Table:
    """Rows grouped by dataset, as Table 1 of the paper: Base, Novel, HM of the seed means; then
    the Average group (mean B, mean N, HM of those)."""
    acc = _accuracies(records, protocol="base-to-novel")
    methods = _method_order(k[0] for k in acc)
    datasets = _ordered(k[1] for k in acc)
    rows, csv_rows = [], []
    means = defaultdict(lambda: ([], []))
    for ds in datasets:
        first = True
        for method in methods:
            base, novel = acc.get((method, ds, ds, "base")), acc.get((method, ds, ds, "novel"))
            if not base and not novel:
                continue
            hm = ""
            if base and novel:
                b, n = statistics.fmean(base), statistics.fmean(novel)
                means[method][0].append(b)
                means[method][1].append(n)
                hm = f"{harmonic_mean(b, n):.2f}"
            seeds = str(max(len(base or []), len(novel or [])))
            rows.append([ds if first else "", method, _cell(base, _seeded(method)), _cell(novel, _seeded(method)),
                         hm or "-", seeds])
            csv_rows.append([ds, method, *_numbers(base), *_numbers(novel), hm, seeds])
            first = False
    first = True
    for method in methods:
        if means[method][0]:
            b, n = statistics.fmean(means[method][0]), statistics.fmean(means[method][1])
            count = f"{len(means[method][0])} datasets"
            rows.append(["Average" if first else "", method, f"{b:.2f}", f"{n:.2f}", f"{harmonic_mean(b, n):.2f}",
                         count])
            csv_rows.append(["Average", method, f"{b:.4f}", "", f"{n:.4f}", "", f"{harmonic_mean(b, n):.2f}",
                             str(len(means[method][0]))])
            first = False
    return Table(f"Base-to-novel generalization (top-1 %, {STD_NOTE})",
                 ["Dataset", "Method", "Base", "Novel", "HM", "Seeds"], rows,
                 ["Dataset", "Method", "Base", "Base std", "Novel", "Novel std", "HM", "Seeds"], csv_rows)


def transfer_table(records: list[dict], protocol: str) -> Table:
    """Cross-dataset or domain-generalization: source, each target, average of targets."""
    acc = _accuracies(records, protocol=protocol)
    methods = _method_order(k[0] for k in acc)
    sources = _ordered(k[1] for k in acc)
    targets = _ordered(k[2] for k in acc if k[2] != k[1])
    header = ["Method"] + [f"{s} (source)" for s in sources] + targets + ["Target average"]
    csv_header = ["Method"] + [c for s in [*(f"{s} (source)" for s in sources), *targets] for c in (s, f"{s} std")]
    csv_header.append("Target average")
    rows, csv_rows = [], []
    for method in methods:
        row, numbers = [method], [method]
        for src in sources:
            vals = acc.get((method, src, src, "all"))
            row.append(_cell(vals, _seeded(method)))
            numbers += _numbers(vals)
        target_means = []
        for tgt in targets:
            vals = next((acc[(method, src, tgt, "all")] for src in sources if (method, src, tgt, "all") in acc), None)
            row.append(_cell(vals, _seeded(method)))
            numbers += _numbers(vals)
            if vals:
                target_means.append(statistics.fmean(vals))
        average = f"{statistics.fmean(target_means):.2f}" if target_means else ""
        row.append(average or "-")
        numbers.append(average)
        rows.append(row)
        csv_rows.append(numbers)
    title = {"cross-dataset": "Cross-dataset generalization", "domain-generalization": "Domain generalization"}
    return Table(f"{title.get(protocol, protocol)} (top-1 %, {STD_NOTE})", header, rows, csv_header, csv_rows)


def few_shot_table(records: list[dict], protocol: str = "few-shot") -> Table:
    """Accuracy on the full test split per dataset and shot count (CoOp's Figure 3 / CLIP-LoRA's
    Table 1), grouped by dataset, then the Average group (mean over datasets per shot count).
    For "finetune", the same with every training image (or the --shots given)."""
    grouped = defaultdict(dict)
    for rec in records:
        if rec.get("protocol") == protocol:
            grouped[(rec["method"], rec["train_dataset"], rec.get("shots", 16))][rec["seed"]] = rec["accuracy"]
    acc = {k: [v[s] for s in sorted(v)] for k, v in grouped.items()}
    methods = _method_order(k[0] for k in acc)
    datasets = _ordered(k[1] for k in acc)
    shots = sorted({k[2] for k in acc})
    label = ["all images" if k == 0 else f"{k} shot" + ("s" if k != 1 else "") for k in shots]
    rows, csv_rows = [], []
    per_shot = defaultdict(list)
    for ds in datasets:
        first = True
        for method in methods:
            cells = [acc.get((method, ds, k)) for k in shots]
            if not any(cells):
                continue
            for k, vals in zip(shots, cells, strict=True):
                if vals:
                    per_shot[(method, k)].append(statistics.fmean(vals))
            rows.append([ds if first else "", method, *(_cell(v, _seeded(method)) for v in cells)])
            csv_rows.append([ds, method, *(n for v in cells for n in _numbers(v))])
            first = False
    first = True
    for method in methods:
        means = [per_shot.get((method, k)) for k in shots]
        if any(means):
            rows.append(["Average" if first else "", method,
                         *(f"{statistics.fmean(m):.2f}" if m else "-" for m in means)])
            csv_rows.append(["Average", method, *(c for m in means
                                                  for c in ((f"{statistics.fmean(m):.4f}", "") if m else ("", "")))])
            first = False
    csv_header = ["Dataset", "Method", *(c for name in label for c in (name, f"{name} std"))]
    title = "Fine-tuned on all classes" if protocol == "finetune" else "Few-shot classification"
    return Table(f"{title} (top-1 %, {STD_NOTE})", ["Dataset", "Method", *label], rows, csv_header, csv_rows)


def build_tables(records: list[dict]) -> list[Table]:
    protocols = _ordered(r["protocol"] for r in records)
    tables = []
    for protocol in protocols:
        if protocol == "base-to-novel":
            tables.append(base_to_novel_table(records))
        elif protocol in ("few-shot", "finetune"):
            tables.append(few_shot_table(records, protocol))
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
