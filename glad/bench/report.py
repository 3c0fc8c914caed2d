"""What every benchmark report carries and how it is headed and written.

A report is a JSON-ready dict: ``bench``, ``command``, ``config``, ``machine`` (glad.provenance),
``clock`` and its description, the load average before and after, then the workload's results.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass

import torch

from glad.bench.timing import describe_clock, load_average
from glad.provenance import machine_info


def start(bench: str, cfg, device: torch.device, clock: str, command: str | None = None) -> dict:
    """The head of a report, taken before the workload runs (the load it starts under)."""
    config = asdict(cfg) if is_dataclass(cfg) else dict(cfg)
    return {"bench": bench, "command": command, "config": config, "machine": machine_info(device),
            "clock": clock, "clock_description": describe_clock(clock), "load": {"before": load_average()}}


def finish(report: dict, **results) -> dict:
    report["load"]["after"] = load_average()
    report.update(results)
    return report


def header(report: dict, title: str, columns: str | None = None) -> list[str]:
    """The lines over every table: what ran, on which machine, under which clock and load; then
    the plain-text table's `columns` and a rule under them, when given."""
    m = report["machine"]
    load = report.get("load", {})
    return [f"glad bench {report['bench']}: {title}",
            f"{m['cpu']} ({m['cpu_count']} CPUs, {m['torch_threads']} torch thread{'s' * (m['torch_threads'] != 1)}), device "
            f"{m.get('device_name', m['device'])}, load {load.get('before')} -> {load.get('after')}",
            f"clock: {report['clock_description']}", "", *([columns, "-" * len(columns)] if columns else [])]


def write(report: dict, path: str) -> None:
    """The report as JSON at `path`, atomically (a temporary file, then a rename)."""
    from glad.io import atomic_write_json

    atomic_write_json(path, report)


def sig(x: float, digits: int = 4) -> float:
    """x rounded to `digits` significant digits (readable JSON at every size)."""
    return float(f"{x:.{digits}g}")
