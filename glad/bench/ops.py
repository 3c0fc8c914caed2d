"""`glad bench ops`: each glad.ops backend against reference, a naive per-tensor loop, and a copy.

For every size and op, each available backend on the device is timed beside:
  * `reference`: the plain-torch backend (foreach ops), the fallback;
  * `naive`: the per-tensor Python loop most SAM code uses (`.item()`-style host
    branch included);
  * `copy`: `dst.copy_(src)` of N values on the same device, measured in the same
    run: the bandwidth ceiling.
Minimal bytes moved per op (N values of s bytes):
  * project:  5 N s  (pass 1 reads g, g'; pass 2 reads g, g' and writes g)
  * perturb:  5 N s  (pass 1 reads g; pass 2 reads p, g and writes backup, p)
  * restore:  2 N s  (reads backup, writes p)
  * copy:     2 N s
Effective GB/s = minimal bytes / best time. On a GPU each timing is `calls`
back-to-back calls between two CUDA events (device time per call), with the host
time of issuing them measured apart (`host_ms`: validation, dispatch, launches), and
the kernel launches of one call counted by the profiler; on a CPU one call is timed
in wall time. GPU sizes should be several times the L2 cache (H100/H200: 50-60 MB) to
measure memory, not cache, bandwidth.

Providers run interleaved, round after round, each right after a copy of its own.
The table's ratios come from the best times it shows: "of copy" is a row's GB/s over
the best copy GB/s of that size, "vs reference" the reference's best time over the
row's, so a faster row never shows a smaller ratio. The medians over rounds of the
paired per-round ratios (blind to slow drifts of the machine) are in the JSON beside.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

import glad.ops as ops
from glad.bench import report as reports
from glad.bench.timing import device_seconds, kernel_launches, resolve_device
from glad.ops._dispatch import _supports

OPS = ("project", "perturb", "restore")
BYTES_PER_VALUE = {"project": 5, "perturb": 5, "restore": 2, "copy": 2}
DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class Config:
    """Settings of `glad bench ops` (CLI flags map one-to-one)."""

    sizes: tuple[str, ...] | None = None  # default: adapter,16M,64M on a CPU; adapter,64M,256M on a GPU
    dtype: str = "float32"
    device: str | None = None
    backends: tuple[str, ...] | None = None
    repeat: int = 3
    warmup: int = 1
    threads: int | None = None
    calls: int | None = None  # default 20 on a GPU, 1 on a CPU


def adapter_shapes():
    """GLAD's adapter on ViT-B/16: LoRA r=8 on q/k/v of 12 image (768) and 12 text (512)
    blocks, plus AlignNet 1024-256-128-512: 150 tensors, 1,098,624 values."""
    shapes = []
    for width in (768, 512):
        for _ in range(12 * 3):
            shapes += [(8, width), (width, 8)]
    shapes += [(256, 1024), (256,), (128, 256), (128,), (512, 128), (512,)]
    return shapes


def shapes_for(size):
    """'adapter', or a value count ('16M', '500k', '1000'): 150 tensors in the adapter's size mix."""
    if size == "adapter":
        return adapter_shapes()
    text = size.strip().lower()
    scale = {"k": 1 << 10, "m": 1 << 20}.get(text[-1:], 1)
    try:
        total = int(float(text.rstrip("km")) * scale)
    except ValueError:
        raise ValueError(f"size {size!r} is not 'adapter' or a value count like 16M, 500k, 1000") from None
    if total < 150:
        raise ValueError(f"size {size!r} has fewer than 150 values; use at least 150")
    base = [int(torch.Size(s).numel()) for s in adapter_shapes()]
    numels = [max(1, base_i * total // sum(base)) for base_i in base]
    numels[-1] += total - sum(numels)
    return [(n,) for n in numels]


# ------------------------------------------------------------------ naive baselines


def naive_project(grads, refs, alpha, delta):
    dot = sum((g.float() * r.float()).sum() for g, r in zip(grads, refs, strict=True))
    n2 = sum((g.float() * g.float()).sum() for g in grads)
    c = float(dot) / (float(n2) + delta) if float(dot) < 0 else 0.0  # host branch
    for g, r in zip(grads, refs, strict=True):
        g.mul_(1 - alpha - alpha * c).add_(r, alpha=alpha)


def naive_perturb(params, grads, rho, backup):
    norm = torch.norm(torch.stack([g.norm(2) for g in grads]), 2)
    scale = rho / (norm + 1e-12)
    for p, g, b in zip(params, grads, backup, strict=True):
        b.copy_(p)
        p.add_(g * scale)


def naive_restore(params, backup):
    for p, b in zip(params, backup, strict=True):
        p.copy_(b)


# ------------------------------------------------------------------ timing


def _bench_size(size, dtype, device, backends, repeat, warmup, calls):
    shapes = shapes_for(size)
    gen = torch.Generator(device="cpu").manual_seed(0)

    def make():
        return [torch.randn(s, generator=gen).to(dtype=dtype, device=device) for s in shapes]

    grads, refs, params = make(), make(), make()
    n = sum(t.numel() for t in grads)
    src = torch.cat([t.flatten() for t in refs])
    dst = torch.empty_like(src)
    backup = [torch.empty_like(p) for p in params]
    states = {}

    def perturb_fn(name):
        if name == "naive":
            return lambda: naive_perturb(params, grads, 0.05, backup)

        def run():
            states[name] = ops.sam_perturb_(params, grads, 0.05, backend=name, backup=backup)
        return run

    def restore_fn(name):
        if name == "naive":
            return lambda: naive_restore(params, backup)
        # The state made by this backend's perturb; the restore copies the same backup list.
        return lambda: ops.sam_restore_(params, states[name])

    def project_fn(name):
        if name == "naive":
            return lambda: naive_project(grads, refs, 0.5, 1e-12)
        return lambda: ops.project_interpolate_(grads, refs, 0.5, backend=name)

    providers = [*backends, "naive"]
    times = {(op, name): [] for op in OPS for name in providers}
    hosts = {(op, name): [] for op in OPS for name in providers}
    copies = {name: [] for name in providers}  # the copy timed right before each provider's ops
    fns = {("project", name): project_fn(name) for name in providers}
    fns.update({("perturb", name): perturb_fn(name) for name in providers})
    fns.update({("restore", name): restore_fn(name) for name in providers})
    for round_ in range(warmup + repeat):
        record = round_ >= warmup
        for name in providers:
            t_copy, _ = device_seconds(lambda: dst.copy_(src), device, calls)
            if record:
                copies[name].append(t_copy)
            for op in OPS:
                if op == "restore":  # each restore needs the state of a perturb before it
                    fns[("perturb", name)]()
                t_op, t_host = device_seconds(fns[(op, name)], device, 1 if op == "restore" else calls)
                if record:
                    times[(op, name)].append(t_op)
                    hosts[(op, name)].append(t_host)
    launches = {key: kernel_launches(fn, device) for key, fn in fns.items()}
    item = grads[0].element_size()
    copy_bytes = BYTES_PER_VALUE["copy"] * n * item
    all_copies = [t for ts in copies.values() for t in ts]
    copy_gbps = copy_bytes / min(all_copies)
    rows = [_row("copy", "copy", size, n, len(shapes), copy_bytes, all_copies, copy_gbps, min(all_copies),
                 [1.0], [1.0], None, None)]
    for (op, name), ts in times.items():
        nbytes = BYTES_PER_VALUE[op] * n * item
        # Ratios per round, between neighbours in time, so a busy moment slows both sides.
        fractions = [(nbytes / t) / (copy_bytes / c) for t, c in zip(ts, copies[name], strict=True)]
        ref = times[(op, "reference")]
        speedups = [r / t for r, t in zip(ref, ts, strict=True)]
        rows.append(_row(op, name, size, n, len(shapes), nbytes, ts, copy_gbps, min(ref), fractions, speedups,
                         hosts[(op, name)], launches[(op, name)]))
    return rows


def _row(op, name, size, n, tensors, nbytes, ts, copy_gbps, ref_best, fractions, speedups, host, launches):
    best = min(ts)
    sig = reports.sig
    return {
        "op": op, "size": size, "values": n, "tensors": tensors, "provider": name,
        "time_ms": sig(best * 1e3), "time_ms_median": sig(statistics.median(ts) * 1e3),
        "host_ms": None if not host or host[0] is None else sig(min(host) * 1e3), "launches": launches,
        "min_bytes": nbytes, "gbps": sig(nbytes / best / 1e9),
        # from the best times: monotonic in this row's time
        "copy_fraction": sig(nbytes / best / copy_gbps, 3),
        "speedup_vs_reference": None if op == "copy" else sig(ref_best / best, 3),
        # medians over rounds of the paired ratios: a second estimate, blind to slow drifts
        "copy_fraction_paired": sig(statistics.median(fractions), 3),
        "speedup_vs_reference_paired": None if op == "copy" else sig(statistics.median(speedups), 3),
    }


def default_backends(device):
    """Backends worth timing on `device` (the Triton interpreter on CPU is a test vehicle)."""
    names = [b for b in ops.BACKENDS if _supports(b, device) is None]
    if device.type == "cpu":
        names = [b for b in names if b != "triton"]
    return names


def run(cfg: Config, progress=None, command: str | None = None) -> dict:
    """Times every op for every size; returns the report (`results`: one row per op, size, provider)."""
    say = progress or (lambda _msg: None)
    device = resolve_device(cfg.device)
    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    if cfg.repeat < 1 or cfg.warmup < 0:
        raise ValueError(f"repeat must be >= 1 and warmup >= 0, got {cfg.repeat} and {cfg.warmup}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    sizes = list(cfg.sizes or (("adapter", "64M", "256M") if device.type == "cuda" else ("adapter", "16M", "64M")))
    for size in sizes:
        shapes_for(size)  # a bad size is an error before anything runs
    backends = list(cfg.backends) if cfg.backends else default_backends(device)
    if "reference" not in backends:
        backends.insert(0, "reference")
    for b in backends:
        why = _supports(b, device)
        if why is not None:
            raise ValueError(f"backend {b!r} cannot run on {device}: {why}")
    calls = cfg.calls or (20 if device.type == "cuda" else 1)
    report = reports.start("ops", cfg, device, "cuda" if device.type == "cuda" else "wall", command)
    report["config"].update(sizes=sizes, backends=backends, calls=calls, bytes_per_value=BYTES_PER_VALUE)
    results = []
    for size in sizes:
        say(f"size {size}")
        results += _bench_size(size, getattr(torch, cfg.dtype), device, backends, cfg.repeat, cfg.warmup, calls)
    return reports.finish(report, results=results)


def table(report):
    """A Markdown table: one row per op, size and provider."""
    cfg = report["config"]
    gpu = cfg["calls"] > 1 or any(r.get("launches") is not None for r in report["results"])
    title = (f"{cfg['dtype']}, best of {cfg['repeat']} interleaved rounds"
             + (f", {cfg['calls']} back-to-back calls per timing" if cfg["calls"] > 1 else ""))
    head = "| op | size | values | provider | ms (best) | ms (median) |"
    rule = "|---|---|---:|---|---:|---:|"
    if gpu:
        head, rule = head + " host ms | launches |", rule + "---:|---:|"
    lines = [*reports.header(report, title), head + " GB/s | of copy | vs reference |", rule + "---:|---:|---:|"]
    for r in report["results"]:
        speed = "" if r["speedup_vs_reference"] is None else f"{r['speedup_vs_reference']:.2f}x"
        cells = f"| {r['op']} | {r['size']} | {r['values']:,} | {r['provider']} | {r['time_ms']:.3f} | " \
                f"{r['time_ms_median']:.3f} |"
        if gpu:
            host = "" if r.get("host_ms") is None else f"{r['host_ms']:.3f}"
            launches = "" if r.get("launches") is None else str(r["launches"])
            cells += f" {host} | {launches} |"
        lines.append(cells + f" {r['gbps']:.2f} | {r['copy_fraction']:.0%} | {speed} |")
    lines.append("\nof copy: this row's GB/s over the best copy's at that size; vs reference: the reference's best "
                 "time over this row's (both from the best times shown; paired per-round medians in the JSON)")
    return "\n".join(lines)
