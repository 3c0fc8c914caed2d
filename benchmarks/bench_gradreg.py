"""Cost of the GradReg step outside its forward/backward passes (CPU).

Two workloads:

* ``adapter``: the parameters of GLAD's adapter on ViT-B/16 (LoRA r=8 on q/k/v of
  all 12 + 12 blocks, AlignNet 1024-256-128-512: 150 tensors, 1.10 M values) with
  a stand-in closure that writes fixed gradients the way backward does (into the
  existing ``.grad`` after ``zero_grad(set_to_none=False)``). It isolates what
  GradReg adds: ``outside = step - time inside the closure``, and
  ``added = outside - the base optimizer's own step``.
* ``tiny``: a real training step of a tiny CLIP (``glad.models.testing`` config,
  LoRA r=8 q/k/v in both towers, AlignNet, CE + KL loss, batch 32 of 32 px
  images, 10 classes), the denominator of the overhead goal (< 5 %).

Usage: python benchmarks/bench_gradreg.py [--quick] [--backends reference,cpu] [--out FILE]
Writes a JSON record (default benchmarks/results/gradreg_cpu.json). Times are the
median over repeats of this thread's CPU time (one torch thread), in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

from glad.io import atomic_write_json
from glad.optim import GradReg

# (row name, mode, flat_params)
VARIANTS = (("off", "off", False), ("sam", "sam", False), ("gradreg", "gradreg", False),
            ("sam+flat", "sam", True), ("gradreg+flat", "gradreg", True))
# CPU time of this process (all its threads): the time other processes take on a shared
# machine does not count, as it would in wall-clock time.
clock = time.process_time


def glad_adapter_shapes(rank=8, widths=(768,) * 12 + (512,) * 12, embed=512, hidden=(256, 128)):
    """Shapes of GLAD's trainable tensors on ViT-B/16: LoRA A/B for q, k, v per block + AlignNet."""
    shapes = []
    for width in widths:
        for _ in ("q", "k", "v"):
            shapes += [(rank, width), (width, rank)]
    dims = (2 * embed, *hidden, embed)
    for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
        shapes += [(d_out, d_in), (d_out,)]
    return shapes


def _median_time(fn, repeats, inner):
    """Median over `repeats` of the mean seconds of `inner` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        start = clock()
        for _ in range(inner):
            fn()
        times.append((clock() - start) / inner)
    return statistics.median(times)


class Timed:
    """Wraps a callable and accumulates the CPU seconds spent inside it."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = clock()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += clock() - start


def measure_step(opt, closure, repeats, inner):
    """ms per step, inside the closure, inside the base optimizer's step, and the rest.

    The rest (``added_ms``) is what GradReg adds to a plain training step;
    ``outside_ms`` = added + the base step = the step outside the passes.
    """
    timed = Timed(closure)
    base_step = opt.base_optimizer.step
    opt.base_optimizer.step = timed_base = Timed(base_step)  # instance attribute: GradReg calls it
    try:
        opt.step(timed)  # warm-up (buffers attached, optimizer state created)
        rows = []
        for _ in range(repeats):
            timed.seconds = timed_base.seconds = 0.0
            start = clock()
            for _ in range(inner):
                opt.step(timed)
            total = (clock() - start) / inner
            rows.append((total, timed.seconds / inner, timed_base.seconds / inner))
    finally:
        del opt.base_optimizer.step
    step_s = statistics.median(r[0] for r in rows)
    closure_s = statistics.median(r[1] for r in rows)
    base_s = statistics.median(r[2] for r in rows)
    added_s = statistics.median(r[0] - r[1] - r[2] for r in rows)
    return {"step_ms": 1e3 * step_s, "closure_ms": 1e3 * closure_s, "base_step_ms": 1e3 * base_s,
            "outside_ms": 1e3 * (added_s + base_s), "added_ms": 1e3 * added_s}


def bench_adapter(backend, repeats, inner):
    torch.manual_seed(0)
    shapes = glad_adapter_shapes()
    params = [torch.nn.Parameter(torch.randn(s) * 0.02) for s in shapes]
    fixed = [torch.randn(s) * 1e-3 for s in shapes]
    loss = torch.tensor(1.0)
    rows = {}
    for name, mode, flat in VARIANTS:
        params = [torch.nn.Parameter(p.detach().clone()) for p in params]  # fresh layout
        base = torch.optim.AdamW(params, lr=1e-6)
        opt = GradReg(params, base, mode=mode, backend=backend, max_grad_norm=1.0, flat_params=flat)

        def closure(base=base, params=params):
            base.zero_grad(set_to_none=False)
            for p, g in zip(params, fixed, strict=True):  # what backward does: accumulate
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.add_(g)
            return loss

        rows[name] = measure_step(opt, closure, repeats, inner)
    meta = {"tensors": len(shapes), "values": sum(p.numel() for p in params)}
    return meta, rows


def bench_ops(backend, repeats, inner):
    """The glad.ops calls of one step on the adapter, per-tensor lists vs flat buffers."""
    from glad.ops import project_interpolate_, sam_perturb_, sam_restore_

    torch.manual_seed(0)
    shapes = glad_adapter_shapes()
    params = [torch.randn(s) for s in shapes]
    g = [torch.randn(s) for s in shapes]
    gp = [torch.randn(s) for s in shapes]
    flat_g, flat_gp = torch.cat([t.reshape(-1) for t in g]), torch.cat([t.reshape(-1) for t in gp])
    flag = torch.zeros((), dtype=torch.bool)

    def perturb_restore():
        sam_restore_(params, sam_perturb_(params, g, 0.1, backend=backend))

    flat_p = torch.cat([t.reshape(-1) for t in params])

    def perturb_restore_flat():
        sam_restore_([flat_p], sam_perturb_([flat_p], [flat_g], 0.1, backend=backend))

    return {
        "perturb_restore_lists_ms": 1e3 * _median_time(perturb_restore, repeats, inner),
        "perturb_restore_flat_ms": 1e3 * _median_time(perturb_restore_flat, repeats, inner),
        "project_lists_ms": 1e3 * _median_time(
            lambda: project_interpolate_(g, gp, 0.5, backend=backend), repeats, inner),
        "project_flat_ms": 1e3 * _median_time(
            lambda: project_interpolate_([flat_g], [flat_gp], 0.5, backend=backend), repeats, inner),
        "host_sync_ms": 1e3 * _median_time(lambda: bool(flag), repeats, 100 * inner),
    }


def bench_tiny(backend, repeats, inner):
    """A real training step of a tiny GLAD model; None when glad.models is not usable here."""
    try:
        import glad.models.testing  # noqa: F401
    except ImportError as exc:
        return {"unavailable": f"glad.models could not be imported ({exc})"}
    try:  # glad-tiny's architecture when glad.world is there (random weights: timing only)
        from glad.world.tiny import MODEL_CONFIG as config
        config_name = "glad-tiny"
    except ImportError:
        config, config_name = {}, "glad.models.testing.tiny_clip_config()"
    rows = {}
    for name, mode, flat in VARIANTS:
        rows[name], meta = _tiny_row(mode, flat, backend, repeats, inner, config)
    meta["config"] = config_name
    return {"meta": meta, "modes": rows}


def _tiny_row(mode, flat, backend, repeats, inner, config):
    from glad.models import GladModel, LoraConfig, glad_loss
    from glad.models.testing import build_tiny_clip

    torch.manual_seed(0)
    clip, tokenizer = build_tiny_clip(seed=0, **config)
    model = GladModel(clip, tokenizer, LoraConfig(r=8), use_alignnet=True, model_name="tiny")
    model.train()
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    classes = [f"class {i}" for i in range(10)]
    tokens = model.tokenize([f"a photo of a {c}." for c in classes])
    images = torch.randn(32, 3, size, size)
    labels = torch.arange(32) % 10
    with torch.no_grad():
        teacher = model.zeroshot_logits(images, tokens).float()
    params = [p for p in model.parameters() if p.requires_grad]
    base = torch.optim.AdamW(params, lr=1e-6)
    opt = GradReg(params, base, mode=mode, backend=backend, model=model, max_grad_norm=1.0,
                  flat_params=flat)

    def closure():
        base.zero_grad(set_to_none=False)
        loss, _ = glad_loss(model(images, tokens), labels, teacher, 1.0)
        loss.backward()
        # detached: the autograd graph is then freed inside the pass, where it belongs
        return loss.detach()

    meta = {"tensors": len(params), "values": sum(p.numel() for p in params),
            "batch": 32, "classes": len(classes), "image_size": size}
    return measure_step(opt, closure, repeats, inner), meta


def available_backends():
    from glad.ops import backend_info

    return [name for name, info in backend_info().items()
            if info["available"] and name in ("reference", "cpu")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--backends", default=None, help="comma list (default: every available CPU one)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "gradreg_cpu.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats, inner = (3, 3) if args.quick else (7, 10)
    backends = args.backends.split(",") if args.backends else available_backends()
    record = {"what": "GradReg step cost outside the forward/backward passes, CPU",
              "torch": torch.__version__, "python": platform.python_version(),
              "machine": platform.machine(), "threads": args.threads,
              "repeats": repeats, "inner": inner, "backends": {}}
    for backend in backends:
        meta, adapter = bench_adapter(backend, repeats, inner)
        tiny = bench_tiny(backend, repeats, inner)
        entry = {"adapter": {"meta": meta, "modes": adapter}, "ops": bench_ops(backend, repeats, inner),
                 "tiny": tiny}
        if "modes" in tiny:
            denominator = tiny["modes"]["gradreg"]["step_ms"]
            entry["goal"] = {
                "tiny_gradreg_step_ms": denominator,
                "adapter_added_ms": {m: adapter[m]["added_ms"] for m in adapter},
                "adapter_added_pct_of_tiny_step": {
                    m: 100 * adapter[m]["added_ms"] / denominator for m in adapter},
                "tiny_added_pct_of_tiny_step": {
                    m: 100 * row["added_ms"] / row["step_ms"] for m, row in tiny["modes"].items()},
            }
        record["backends"][backend] = entry
        print(f"[{backend}]")
        for name, rows in (("adapter", adapter), ("tiny", tiny.get("modes", {}))):
            for mode, row in rows.items():
                print(f"  {name:8s} {mode:8s} " + "  ".join(f"{k} {v:7.2f}" for k, v in row.items()))
        print("  ops     " + "  ".join(f"{k} {v:.3f}" for k, v in entry["ops"].items()))
        if "goal" in entry:
            print("  goal    " + json.dumps(entry["goal"], default=lambda v: round(v, 3)))
    atomic_write_json(args.out, record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
