"""`glad bench alignnet`: AlignNet logits, fused and class-chunked, against the direct formula (CPU).

Logits of B images x C classes (default B = 256, C = 1000, D = 512, AlignNet 1024-256-128-512
with random non-zero weights), inference (no grad) and training (forward + backward of a
cross-entropy). Providers: ``naive`` builds every [f ; t] pair (the B x C x 2D input and
B x C x D outputs), ``fused`` is ``AlignNet.logits`` at budgets of 256, 64 (the default) and
16 MiB. Each case runs in its own processes: one for time, one for memory, where glibc
returns every block of 64 KiB or more to the OS at once (MALLOC_MMAP_THRESHOLD_), so that the
peak resident set size minus the size before the call follows the live tensors rather than
the allocator's caching. Times are medians of the timing thread's CPU time, one torch thread.

(Merged LoRA against plain CLIP is `glad bench eval`.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from glad.bench import report as reports
from glad.bench.memory import peak_rss_bytes, rss_bytes
from glad.bench.timing import Clock

MiB = 2**20


@dataclass
class Config:
    """Settings of `glad bench alignnet` (CLI flags map one-to-one)."""

    batch: int = 256
    classes: int = 1000
    dim: int = 512
    repeats: int = 3
    budgets_mib: tuple[int, ...] = (256, 64, 16)  # the fused provider's chunk budgets (64: glad's default)
    quick: bool = False  # B = 32, C = 100, one repeat (a smoke run)


def case(provider: str, mode: str, batch: int, classes: int, dim: int, budget: int, repeats: int) -> dict:
    """Time and peak memory of one provider/mode (run in a child process of its own)."""
    from glad.models import AlignNet, naive_alignnet_logits

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = AlignNet(dim)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    f = F.normalize(torch.randn(batch, dim), dim=-1)
    t = F.normalize(torch.randn(classes, dim), dim=-1)
    scale = torch.tensor(100.0)
    labels = torch.randint(0, classes, (batch,))

    def run_once():
        if mode == "train":
            fi, ti = f.clone().requires_grad_(), t.clone().requires_grad_()
            net.zero_grad(set_to_none=True)
            out = (naive_alignnet_logits(net, fi, ti, scale) if provider == "naive"
                   else net.logits(fi, ti, scale, budget))
            F.cross_entropy(out, labels[: len(fi)] % len(ti)).backward()
            return out.detach()
        with torch.no_grad():
            return (naive_alignnet_logits(net, f, t, scale) if provider == "naive"
                    else net.logits(f, t, scale, budget))

    # Warm up on a tiny problem with one class per chunk, so that one-time costs (kernel
    # set-up, the modules activation checkpointing imports on first use) are not counted.
    full = (f, t, budget)
    f, t, budget = f[:2], t[:3], 1
    run_once()
    f, t, budget = full
    base = rss_bytes()
    out = run_once()  # first full run; its peak counts too (it is the same work)
    peak = peak_rss_bytes() - base
    clock = Clock(torch.device("cpu"), "thread")
    seconds = clock.median_seconds(run_once, repeats) if repeats else None
    with torch.no_grad():  # agreement with the direct formula, on a slice small enough for both
        ref = naive_alignnet_logits(net, f[:8], t, scale)
    err = (out[:8] - ref).abs().max().item()
    return {"seconds": seconds, "peak_extra_mib": peak / MiB, "max_abs_diff_vs_naive": err}


def _child(args: list, env: dict) -> dict:
    cmd = [sys.executable, "-m", "glad.bench.alignnet", json.dumps(args)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **env})
    return json.loads(out.stdout.splitlines()[-1])


def run(cfg: Config, progress=None, command: str | None = None) -> dict:
    say = progress or (lambda _msg: None)
    batch, classes, dim = (32, 100, cfg.dim) if cfg.quick else (cfg.batch, cfg.classes, cfg.dim)
    repeats = 1 if cfg.quick else cfg.repeats
    if min(batch, classes, dim, repeats, *cfg.budgets_mib) < 1:
        raise ValueError(f"batch, classes, dim, repeats and budgets must be >= 1, got {batch}, {classes}, {dim}, "
                         f"{repeats}, {list(cfg.budgets_mib)}")
    torch.set_num_threads(1)  # as in the child processes, which the report describes
    report = reports.start("alignnet", cfg, torch.device("cpu"), "thread", command)
    report["config"].update(batch=batch, classes=classes, repeats=repeats)
    rows = []
    for mode in ("infer", "train"):
        for budget in (None, *cfg.budgets_mib):  # None: the naive provider
            provider = "naive" if budget is None else "fused"
            say(f"{mode}: {provider}" + ("" if budget is None else f", {budget} MiB budget"))
            args = [provider, mode, batch, classes, dim, (budget or 0) * MiB]
            timed = _child(args + [repeats], {})
            # Memory in a second process where glibc hands every block >= 64 KiB straight back to
            # the OS, so the peak resident size follows the live tensors, not allocator caching.
            mem = _child(args + [0], {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"})
            rows.append({"mode": mode, "provider": provider, "budget_mib": budget, "B": batch, "C": classes,
                         "D": dim, "seconds": timed["seconds"], "peak_extra_mib": mem["peak_extra_mib"],
                         "peak_extra_mib_default_malloc": timed["peak_extra_mib"],
                         "max_abs_diff_vs_naive": timed["max_abs_diff_vs_naive"]})
    for row in rows:
        naive = next(r for r in rows if r["mode"] == row["mode"] and r["provider"] == "naive")
        row["x_naive_time"] = naive["seconds"] / row["seconds"]
        row["x_naive_memory"] = naive["peak_extra_mib"] / max(row["peak_extra_mib"], 1e-9)
    return reports.finish(report, rows=rows)


def table(report: dict) -> str:
    cfg = report["config"]
    title = f"logits of {cfg['batch']} images x {cfg['classes']} classes, D = {cfg['dim']}, median of {cfg['repeats']}"
    head = (f"{'mode':<6} {'provider':<22} {'time s':>8} {'x naive':>8} {'peak MiB':>9} {'x less':>7} "
            f"{'max abs diff':>13}")
    lines = reports.header(report, title, head)
    for r in report["rows"]:
        name = "naive" if r["budget_mib"] is None else f"fused, {r['budget_mib']} MiB budget"
        diff = "-" if r["provider"] == "naive" else f"{r['max_abs_diff_vs_naive']:.1e}"
        lines.append(f"{r['mode']:<6} {name:<22} {r['seconds']:>8.3f} {r['x_naive_time']:>7.2f}x "
                     f"{r['peak_extra_mib']:>9.0f} {r['x_naive_memory']:>6.1f}x {diff:>13}")
    lines.append("peak MiB: resident set size above the size before the call, glibc returning freed blocks at once")
    return "\n".join(lines)


if __name__ == "__main__":  # the child process of one case
    print(json.dumps(case(*json.loads(sys.argv[1]))))
