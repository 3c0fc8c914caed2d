"""AlignNet logits (fused, class-chunked vs the direct formula) and merged-LoRA inference speed (CPU).

Two parts:

* ``alignnet``: logits of B images x C classes (default B = 256, C = 1000, D = 512,
  AlignNet 1024-256-128-512 with random non-zero weights), inference (no grad) and
  training (forward + backward). Providers: ``naive`` builds every [f ; t] pair (the
  B x C x 2D input and B x C x D outputs), ``fused`` is ``AlignNet.logits`` at budgets of 256, 64
  (the default) and 16 MiB. Each case runs in its own processes: one for time, one
  for memory, where glibc returns every block of 64 KiB or more to the OS at once
  (MALLOC_MMAP_THRESHOLD_), so that the peak resident set size minus the size before
  the call follows the live tensors rather than the allocator's caching.
* ``lora``: image and text encoding with ViT-B-16 (random weights): plain open_clip vs
  the same model with LoRA r=8 on q/k/v of both towers, merged, and unmerged. Runs are
  interleaved (A B C A B C ...) so drifting machine load hits all providers alike.

Times are the median over repeats of this thread's CPU time with one torch thread, so
other processes on a shared machine do not count.

Usage: python benchmarks/bench_alignnet.py [--part alignnet|lora|all] [--quick] [--out FILE]
Writes JSON (default benchmarks/results/alignnet_cpu.json).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

clock = time.thread_time
MiB = 2**20


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _median(fn, repeats):
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


# ------------------------------------------------------------------- alignnet part
def _alignnet_case(provider: str, mode: str, batch: int, classes: int, dim: int, budget: int, repeats: int):
    """Runs in a child process: time and peak memory of one provider/mode."""
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

    def run():
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
    run()
    f, t, budget = full
    base = _rss_bytes()
    out = run()  # first full run; its peak counts too (it is the same work)
    peak = _peak_rss_bytes() - base
    seconds = _median(run, repeats) if repeats else None
    with torch.no_grad():  # agreement with the direct formula, on a slice small enough for both
        ref = naive_alignnet_logits(net, f[:8], t, scale)
    err = (out[:8] - ref).abs().max().item()
    return {"seconds": seconds, "peak_extra_mib": peak / MiB, "max_abs_diff_vs_naive": err}


def _child(args: list, env: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(args)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **env})
    return json.loads(out.stdout.splitlines()[-1])


def bench_alignnet(quick: bool) -> list[dict]:
    batch, classes, dim = (32, 100, 512) if quick else (256, 1000, 512)
    repeats = 1 if quick else 3
    cases = [("naive", None), ("fused", 256 * MiB), ("fused", 64 * MiB), ("fused", 16 * MiB)]
    rows = []
    for mode in ("infer", "train"):
        for provider, budget in cases:
            args = [provider, mode, batch, classes, dim, budget or 0]
            timed = _child(args + [repeats], {})
            # Memory in a second process where glibc hands every block >= 64 KiB straight back to
            # the OS, so the peak resident size follows the live tensors, not allocator caching.
            mem = _child(args + [0], {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"})
            row = {"part": "alignnet", "mode": mode, "provider": provider,
                   "budget_mib": None if budget is None else budget / MiB,
                   "B": batch, "C": classes, "D": dim, "seconds": timed["seconds"],
                   "peak_extra_mib": mem["peak_extra_mib"], "peak_extra_mib_default_malloc": timed["peak_extra_mib"],
                   "max_abs_diff_vs_naive": timed["max_abs_diff_vs_naive"]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


# ----------------------------------------------------------------------- lora part
def bench_lora(quick: bool) -> list[dict]:
    from glad.models import LoraConfig, inject_lora, load_clip, merge_lora, unmerge_lora

    torch.set_num_threads(1)
    torch.manual_seed(0)
    plain, _, _, tokenizer = load_clip("ViT-B-16", None, device="cpu")
    lora = copy.deepcopy(plain)
    inject_lora(lora, LoraConfig())
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.02)
    n_img, n_txt = (1, 4) if quick else (8, 32)
    repeats = 1 if quick else 7
    images = torch.randn(n_img, 3, 224, 224)
    tokens = tokenizer([f"a photo of a class number {i}." for i in range(n_txt)])

    def enc_image(m):
        return lambda: m.encode_image(images)

    def enc_text(m):
        return lambda: m.encode_text(tokens)

    rows = []
    for what, make in (("image", enc_image), ("text", enc_text)):
        times = {"plain": [], "lora-merged": [], "lora-unmerged": []}
        with torch.no_grad():
            make(plain)()  # warm-up
            for _ in range(repeats):
                for provider in times:
                    model = plain if provider == "plain" else lora
                    if provider == "lora-merged":
                        merge_lora(lora)
                    start = clock()
                    make(model)()
                    times[provider].append(clock() - start)
                    if provider == "lora-merged":
                        unmerge_lora(lora)
        base = statistics.median(times["plain"])
        for provider, ts in times.items():
            row = {"part": "lora", "what": what, "provider": provider, "batch": n_img if what == "image" else n_txt,
                   "seconds": statistics.median(ts), "vs_plain": statistics.median(ts) / base}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("alignnet", "lora", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "alignnet_cpu.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_alignnet_case(*json.loads(args.child))))
        return
    rows = []
    if args.part in ("alignnet", "all"):
        rows += bench_alignnet(args.quick)
    if args.part in ("lora", "all"):
        rows += bench_lora(args.quick)
    record = {"machine": platform.machine(), "processor": platform.processor(), "python": platform.python_version(),
              "torch": torch.__version__, "threads": 1, "quick": args.quick,
              "clock": "thread CPU time, median", "rows": rows}
    if not args.quick or args.out != parser.get_default("out"):
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        if args.part != "all" and os.path.isfile(args.out):  # keep the other part's rows
            with open(args.out) as f:
                old = json.load(f)
            if old.get("quick") == args.quick:
                record["rows"] = [r for r in old.get("rows", []) if r["part"] != args.part] + rows
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)
            f.write("\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
