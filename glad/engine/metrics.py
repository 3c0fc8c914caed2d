"""Per-step training metrics: what GLAD's gradient regularisation does, made visible.

Each step adds one row (loss at theta and at theta + eps, its CE and KL parts, ||g||, ||g'||,
cos(g, g'), whether the conflict projection fired) as a small device tensor: nothing is read
back then. Every `every` steps (and before a checkpoint, and at the end) the rows are read in
one transfer and appended to `metrics.jsonl` beside the job, with the step, epoch, learning
rate and whether GradReg skipped the step; optionally also to TensorBoard.

`summarize(path)` turns the file into what done.json keeps: per epoch the mean losses, the
conflict rate (share of steps whose projection fired) and the mean cos(g, g').
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict

import torch

from glad.io import atomic_write_text

FIELDS = ("loss", "perturbed_loss", "ce", "kl", "grad_norm", "perturbed_grad_norm", "cos", "projected")
FILE_NAME = "metrics.jsonl"


_NAN: dict[torch.device, torch.Tensor] = {}


def _nan(device) -> torch.Tensor:
    """One NaN per device, made once (not a host-to-device copy every step)."""
    device = torch.device(device)
    if device not in _NAN:
        _NAN[device] = torch.tensor(math.nan, device=device)
    return _NAN[device]


def _value(x, device) -> torch.Tensor:
    if x is None:
        return _nan(device)
    return x.detach().float().reshape(()).to(device)


def step_row(info: dict, parts: dict, device) -> torch.Tensor:
    """The metrics of one GradReg step as a device tensor (FIELDS order, NaN where not measured)."""
    grad_norm = info.get("grad_norm")
    if grad_norm is None and info.get("norm_sq") is not None:
        grad_norm = info["norm_sq"].clamp_min(0).sqrt()
    if grad_norm is None:
        grad_norm = info.get("final_grad_norm")
    g, gp = _value(grad_norm, device), _value(info.get("perturbed_grad_norm"), device)
    dot = info.get("dot")
    cos = _nan(device) if dot is None else _value(dot, device) / (g * gp).clamp_min(1e-30)
    projected = _nan(device) if dot is None else (_value(dot, device) < 0).float()
    return torch.stack([_value(info.get("loss"), device), _value(info.get("perturbed_loss"), device),
                        _value(parts.get("ce"), device), _value(parts.get("kl"), device), g, gp, cos, projected])


class StepMetrics:
    """Collects step rows on the device and writes them in batches (see the module docs)."""

    def __init__(self, job_dir: str, every: int = 25, resume_step: int = 0, tensorboard_dir: str | None = None):
        self.path = os.path.join(job_dir, FILE_NAME)
        self.every = max(1, int(every))
        self._rows: list[torch.Tensor] = []
        self._meta: list[dict] = []
        self._writer = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(tensorboard_dir)
        self._truncate(resume_step)

    def _truncate(self, step: int) -> None:
        """On resume, drop the rows a killed run wrote after its last checkpoint."""
        if not os.path.exists(self.path):
            return
        kept = [line for line in _lines(self.path) if line.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def add(self, row: torch.Tensor, *, step: int, epoch: int, lr: float, skipped: bool) -> None:
        self._rows.append(row)
        self._meta.append({"step": step, "epoch": epoch, "lr": lr, "skipped": bool(skipped)})
        if len(self._rows) >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        values = torch.stack(self._rows).tolist()  # the one read-back for these steps
        lines = []
        for meta, row in zip(self._meta, values, strict=True):
            record = {**meta, **{k: (None if v != v else round(v, 6)) for k, v in zip(FIELDS, row, strict=True)}}
            if record["projected"] is not None:
                record["projected"] = bool(record["projected"])
            lines.append(json.dumps(record))
            if self._writer is not None:
                for k in FIELDS:
                    if record[k] is not None:
                        self._writer.add_scalar(f"train/{k}", float(record[k]), meta["step"])
                self._writer.add_scalar("train/lr", meta["lr"], meta["step"])
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        if self._writer is not None:
            self._writer.flush()
        self._rows, self._meta = [], []

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.close()


def _lines(path: str) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
    return out


def read_metrics(path: str) -> list[dict]:
    """The rows of a metrics.jsonl file (a missing file: none)."""
    return _lines(path) if os.path.exists(path) else []


def summarize(path: str) -> dict:
    """Per-epoch means and the conflict rate of a job's metrics, for done.json."""
    rows = read_metrics(path)
    epochs = defaultdict(list)
    for r in rows:
        epochs[r["epoch"]].append(r)

    def mean(values):
        values = [v for v in values if v is not None]
        return round(sum(values) / len(values), 6) if values else None

    per_epoch = []
    for epoch in sorted(epochs):
        group = epochs[epoch]
        fired = [r["projected"] for r in group if r.get("projected") is not None]
        per_epoch.append({"epoch": epoch, "steps": len(group), "loss": mean(r["loss"] for r in group),
                          "perturbed_loss": mean(r["perturbed_loss"] for r in group),
                          "cos": mean(r["cos"] for r in group),
                          "conflict_rate": round(sum(fired) / len(fired), 4) if fired else None,
                          "skipped": sum(r["skipped"] for r in group)})
    fired = [r["projected"] for r in rows if r.get("projected") is not None]
    return {"file": FILE_NAME, "steps": len(rows),
            "conflict_rate": round(sum(fired) / len(fired), 4) if fired else None, "epochs": per_epoch}
