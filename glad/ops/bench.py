"""`glad bench ops`: each backend against reference, a naive per-tensor loop, and a copy.

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
the kernel launches of one call counted by the profiler; on a CPU one call is timed.
GPU sizes should be several times the L2 cache (H100/H200: 50-60 MB) to measure memory,
not cache, bandwidth. Providers run interleaved, round after round, and each provider's ops run right after a copy of their own, so a
busy machine slows both sides of every comparison alike: `copy_fraction` (op
GB/s over that copy's GB/s) and `speedup_vs_reference` are medians over rounds
of these paired ratios; times are the best round (as timeit recommends) and the
median.
"""

from __future__ import annotations

import statistics
import time

import torch

import glad.ops as ops
from glad.ops._dispatch import _supports
from glad.provenance import machine_info

OPS = ("project", "perturb", "restore")
BYTES_PER_VALUE = {"project": 5, "perturb": 5, "restore": 2, "copy": 2}


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


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, calls=1):
    """(seconds per call on the device, seconds per call of host time issuing it; None on a CPU,
    where the two are one)."""
    if device.type != "cuda":
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls, None
    torch.cuda.synchronize(device)
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    host = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - host) / calls
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3 / calls, host


def _launches(fn, device):
    """CUDA kernels one call launches (None off a GPU, or when the profiler cannot say)."""
    if device.type != "cuda":
        return None
    try:
        from torch.profiler import ProfilerActivity, profile

        fn()  # warm: first-call allocations are not the op's
        torch.cuda.synchronize(device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize(device)
        return sum(1 for e in prof.events() if getattr(e, "device_type", None) is not None
                   and str(e.device_type).endswith("CUDA") and not e.name.startswith(("Memcpy", "Memset")))
    except Exception:  # noqa: BLE001 - a count is a nicety, never a failure
        return None


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
            t_copy, _ = _timed(lambda: dst.copy_(src), device, calls)
            if record:
                copies[name].append(t_copy)
            for op in OPS:
                if op == "restore":  # each restore needs the state of a perturb before it
                    fns[("perturb", name)]()
                t_op, t_host = _timed(fns[(op, name)], device, 1 if op == "restore" else calls)
                if record:
                    times[(op, name)].append(t_op)
                    hosts[(op, name)].append(t_host)
    launches = {key: _launches(fn, device) for key, fn in fns.items()}
    item = grads[0].element_size()
    copy_bytes = BYTES_PER_VALUE["copy"] * n * item
    all_copies = [t for ts in copies.values() for t in ts]
    rows = [_row("copy", "copy", size, n, len(shapes), copy_bytes, all_copies, [1.0], None, None, None)]
    for (op, name), ts in times.items():
        nbytes = BYTES_PER_VALUE[op] * n * item
        # Ratios per round, between neighbours in time, so a busy moment slows both sides.
        fractions = [(nbytes / t) / (copy_bytes / c) for t, c in zip(ts, copies[name], strict=True)]
        ref = times[(op, "reference")]
        speedups = [r / t for r, t in zip(ref, ts, strict=True)]
        rows.append(_row(op, name, size, n, len(shapes), nbytes, ts, fractions, speedups, hosts[(op, name)],
                         launches[(op, name)]))
    return rows


def _row(op, name, size, n, tensors, nbytes, ts, fractions, speedups, host, launches):
    best = min(ts)
    return {
        "op": op, "size": size, "values": n, "tensors": tensors, "provider": name,
        "time_ms": _sig(best * 1e3), "time_ms_median": _sig(statistics.median(ts) * 1e3),
        "host_ms": None if not host or host[0] is None else _sig(min(host) * 1e3), "launches": launches,
        "min_bytes": nbytes, "gbps": _sig(nbytes / best / 1e9),
        "copy_fraction": _sig(statistics.median(fractions), 3),
        "speedup_vs_reference": None if speedups is None else _sig(statistics.median(speedups), 3),
    }


def _sig(x, digits=4):
    """x rounded to `digits` significant digits (readable JSON at every size)."""
    return float(f"{x:.{digits}g}")


def default_backends(device):
    """Backends worth timing on `device` (the Triton interpreter on CPU is a test vehicle)."""
    names = [b for b in ops.BACKENDS if _supports(b, device) is None]
    if device.type == "cpu":
        names = [b for b in names if b != "triton"]
    return names


def run_ops_bench(sizes=("adapter", "16M", "64M"), dtype=torch.float32, device=None, backends=None,
                  repeat=3, warmup=1, threads=None, command=None, calls=None):
    """Times every op for every size; returns a JSON-ready dict (`machine`, `config`, `results`).

    `command` (the command line that ran it) is recorded in the report when given.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if threads:
        torch.set_num_threads(threads)
    backends = list(backends) if backends else default_backends(device)
    if "reference" not in backends:
        backends.insert(0, "reference")
    for b in backends:
        why = _supports(b, device)
        if why is not None:
            raise ValueError(f"backend {b!r} cannot run on {device}: {why}")
    info = machine_info(device)
    calls = calls or (20 if device.type == "cuda" else 1)
    results = []
    for size in sizes:
        results += _bench_size(size, dtype, device, backends, repeat, warmup, calls)
    config = {"sizes": list(sizes), "dtype": str(dtype).replace("torch.", ""), "backends": backends,
              "repeat": repeat, "warmup": warmup, "bytes_per_value": BYTES_PER_VALUE, "calls": calls,
              "time": "best of `repeat` interleaved rounds (median also given); per call, over `calls` "
                      "back-to-back calls between CUDA events on a GPU (restore: one call after its perturb)",
              "host": "host time per call of issuing the calls (validation, dispatch, launches)",
              "ratios": "median over rounds of per-round ratios (copy paired with each provider)"}
    report = {"machine": info, "config": config, "results": results}
    if command:
        report = {"command": command, **report}
    return report


def format_table(report):
    """A Markdown table: one row per op, size and provider."""
    head = ("| op | size | values | provider | time ms (best) | median | host ms | launches | GB/s (best) | "
            "of copy* | vs reference* |\n|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in report["results"]:
        speed = "" if r["speedup_vs_reference"] is None else f"{r['speedup_vs_reference']:.2f}x"
        host = "" if r.get("host_ms") is None else f"{r['host_ms']:.3f}"
        launches = "" if r.get("launches") is None else str(r["launches"])
        lines.append(f"| {r['op']} | {r['size']} | {r['values']:,} | {r['provider']} | {r['time_ms']:.3f} | "
                     f"{r['time_ms_median']:.3f} | {host} | {launches} | {r['gbps']:.2f} | "
                     f"{r['copy_fraction']:.0%} | {speed} |")
    lines.append("\n*median over rounds of the ratio to the copy / reference timed in the same round")
    return "\n".join(lines)


def write_json(report, path):
    """Writes the report atomically (temp file in the same folder, then rename)."""
    from glad.io import atomic_write_json

    atomic_write_json(path, report)
