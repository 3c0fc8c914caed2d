"""`glad bench gradreg`: what the GradReg step costs outside its forward/backward passes (CPU).

Two workloads:

* ``adapter``: the parameters of GLAD's adapter on ViT-B/16 (150 tensors, 1.10 M values,
  ``glad.bench.ops.adapter_shapes``) with a stand-in closure that writes fixed gradients the
  way backward does (into the existing ``.grad`` after ``zero_grad(set_to_none=False)``). It
  isolates what GradReg adds: ``outside = step - time inside the closure``, and
  ``added = outside - the base optimizer's own step``.
* ``model``: a real training step of a small CLIP (glad-tiny with random weights by default:
  LoRA r=8 q/k/v in both towers, AlignNet, CE + KL loss, batch 32, 10 classes), the
  denominator of the overhead.

Also the glad.ops calls of one step on the adapter, as per-tensor lists and as flat buffers.
Times are medians over repeats of the process's CPU time.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from glad.bench import backbone
from glad.bench import report as reports
from glad.bench.ops import adapter_shapes
from glad.bench.timing import Clock, PartTimers

# (row name, mode, flat_params)
VARIANTS = (("off", "off", False), ("sam", "sam", False), ("gradreg", "gradreg", False),
            ("sam+flat", "sam", True), ("gradreg+flat", "gradreg", True))


@dataclass
class Config:
    """Settings of `glad bench gradreg` (CLI flags map one-to-one)."""

    quick: bool = False  # 3 x 3 calls instead of 7 x 10 (a smoke run)
    backends: tuple[str, ...] | None = None  # default: every available CPU backend
    threads: int = 1
    model: str = "glad-tiny"
    batch_size: int = 32
    num_classes: int = 10


def measure_step(opt, closure, clock: Clock, repeats: int, inner: int) -> dict:
    """ms per step, inside the closure, inside the base optimizer's step, and the rest.

    The rest (``added_ms``) is what GradReg adds to a plain training step;
    ``outside_ms`` = added + the base step = the step outside the passes.
    """
    timers = PartTimers(clock)
    timed_closure = timers.wrap("closure", closure)
    base_step = opt.base_optimizer.step
    opt.base_optimizer.step = timers.wrap("base_step", base_step)  # instance attribute: GradReg calls it
    try:
        opt.step(timed_closure)  # warm-up (buffers attached, optimizer state created)
        rows = []
        for _ in range(repeats):
            timers.totals.clear()
            start = clock.now()
            for _ in range(inner):
                opt.step(timed_closure)
            total = (clock.now() - start) / inner
            rows.append((total, timers.totals["closure"] / inner, timers.totals["base_step"] / inner))
    finally:
        del opt.base_optimizer.step
    med = [statistics.median(column) for column in zip(*rows, strict=True)]
    added = statistics.median(r[0] - r[1] - r[2] for r in rows)
    return {"step_ms": 1e3 * med[0], "closure_ms": 1e3 * med[1], "base_step_ms": 1e3 * med[2],
            "outside_ms": 1e3 * (added + med[2]), "added_ms": 1e3 * added}


def bench_adapter(backend, clock, repeats, inner):
    from glad.optim import GradReg

    torch.manual_seed(0)
    shapes = adapter_shapes()
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

        rows[name] = measure_step(opt, closure, clock, repeats, inner)
    meta = {"tensors": len(shapes), "values": sum(p.numel() for p in params)}
    return {"meta": meta, "modes": rows}


def bench_ops(backend, clock, repeats, inner):
    """The glad.ops calls of one step on the adapter, per-tensor lists vs flat buffers."""
    from glad.ops import project_interpolate_, sam_perturb_, sam_restore_

    torch.manual_seed(0)
    shapes = adapter_shapes()
    params = [torch.randn(s) for s in shapes]
    g = [torch.randn(s) for s in shapes]
    gp = [torch.randn(s) for s in shapes]
    flat_p, flat_g, flat_gp = (torch.cat([t.reshape(-1) for t in ts]) for ts in (params, g, gp))
    flag = torch.zeros((), dtype=torch.bool)

    def ms(fn, inner=inner):
        return 1e3 * clock.median_seconds(fn, repeats, inner)

    return {
        "perturb_restore_lists_ms": ms(lambda: sam_restore_(params, sam_perturb_(params, g, 0.1, backend=backend))),
        "perturb_restore_flat_ms": ms(
            lambda: sam_restore_([flat_p], sam_perturb_([flat_p], [flat_g], 0.1, backend=backend))),
        "project_lists_ms": ms(lambda: project_interpolate_(g, gp, 0.5, backend=backend)),
        "project_flat_ms": ms(lambda: project_interpolate_([flat_g], [flat_gp], 0.5, backend=backend)),
        "host_sync_ms": ms(lambda: bool(flag), 100 * inner),
    }


def bench_model(cfg: Config, backend, clock, repeats, inner):
    """A real training step of `cfg.model` (random weights) under every GradReg variant."""
    from glad.models import GladModel, glad_loss
    from glad.optim import GradReg

    rows, meta = {}, {}
    for name, mode, flat in VARIANTS:
        clip, tokenizer, size = backbone.load_backbone(cfg.model, None, "cpu")
        torch.manual_seed(0)
        model = GladModel(clip, tokenizer, backbone.lora_config(), use_alignnet=True, model_name=cfg.model)
        model.train()
        images, labels, classnames = backbone.random_batch(cfg.batch_size, cfg.num_classes, size, 0, "cpu")
        tokens = model.tokenize([backbone.TEMPLATE.format(c) for c in classnames])
        with torch.no_grad():
            teacher = model.zeroshot_logits(images, tokens).float()
        params = model.trainable_parameters()
        base = torch.optim.AdamW(params, lr=1e-6)
        opt = GradReg(params, base, mode=mode, backend=backend, model=model, max_grad_norm=1.0, flat_params=flat)

        def closure(base=base, model=model, tokens=tokens, teacher=teacher, images=images, labels=labels):
            base.zero_grad(set_to_none=False)
            loss, _ = glad_loss(model(images, tokens), labels, teacher, 1.0)
            loss.backward()
            # detached: the autograd graph is then freed inside the pass, where it belongs
            return loss.detach()

        rows[name] = measure_step(opt, closure, clock, repeats, inner)
        meta = {"model": cfg.model, "tensors": len(params), "values": sum(p.numel() for p in params),
                "batch": cfg.batch_size, "classes": cfg.num_classes, "image_size": size}
    return {"meta": meta, "modes": rows}


def available_backends():
    from glad.ops import backend_info

    return [name for name, info in backend_info().items() if info["available"] and name in ("reference", "cpu")]


def run(cfg: Config, progress=None, command: str | None = None) -> dict:
    say = progress or (lambda _msg: None)
    torch.set_num_threads(cfg.threads)
    clock = Clock(torch.device("cpu"), "cpu")
    repeats, inner = (3, 3) if cfg.quick else (7, 10)
    backends = list(cfg.backends or available_backends())
    report = reports.start("gradreg", cfg, clock.device, clock.kind, command)
    report["config"].update(backends=backends, repeats=repeats, inner=inner)
    results = {}
    for backend in backends:
        say(f"backend {backend}")
        adapter = bench_adapter(backend, clock, repeats, inner)
        model = bench_model(cfg, backend, clock, repeats, inner)
        step = model["modes"]["gradreg"]["step_ms"]
        results[backend] = {
            "adapter": adapter, "ops": bench_ops(backend, clock, repeats, inner), "model": model,
            "adapter_added_pct_of_model_step": {m: 100 * r["added_ms"] / step for m, r in adapter["modes"].items()},
            "model_added_pct_of_step": {m: 100 * r["added_ms"] / r["step_ms"] for m, r in model["modes"].items()}}
    return reports.finish(report, backends=results)


def table(report: dict) -> str:
    cfg = report["config"]
    title = f"GradReg's cost outside the passes, median of {cfg['repeats']} x {cfg['inner']} steps"
    head = (f"{'backend':<10} {'workload':<9} {'variant':<13} {'step ms':>9} {'= closure':>10} {'+ base step':>12} "
            f"{'+ added':>9} {'added % of model step':>22}")
    lines = reports.header(report, title, head)
    for backend, entry in report["backends"].items():
        for workload in ("adapter", "model"):
            for variant, r in entry[workload]["modes"].items():
                pct = (entry["adapter_added_pct_of_model_step"] if workload == "adapter"
                       else entry["model_added_pct_of_step"])[variant]
                lines.append(f"{backend:<10} {workload:<9} {variant:<13} {r['step_ms']:>9.3f} {r['closure_ms']:>10.3f} "
                             f"{r['base_step_ms']:>12.3f} {r['added_ms']:>9.3f} {pct:>21.1f}%")
        ops = entry["ops"]
        lines.append(f"{backend:<10} ops: " + ", ".join(f"{k.removesuffix('_ms')} {v:.3f} ms" for k, v in ops.items()))
    meta = next(iter(report["backends"].values()))["model"]["meta"] if report["backends"] else {}
    lines.append(f"adapter: 150 tensors of GLAD's ViT-B/16 adapter with a stand-in backward; model: {meta.get('model')} "
                 f"(random weights), batch {meta.get('batch')}, {meta.get('classes')} classes, {meta.get('image_size')} px; "
                 "added = step - closure - base step (what GradReg adds)")
    return "\n".join(lines)
