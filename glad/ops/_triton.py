"""Triton backend: one kernel launch per tensor and pass; at its best on flat buffers.

The Triton interpreter (TRITON_INTERPRET=1, how the tests run it on CPU) cannot
follow tables of pointers, so the kernels take one contiguous tensor each. With
`FlatParams` a model's trainable tensors are one flat buffer per dtype, so a
call is: reduce (one launch per buffer) -> finalize (one launch: the global
sums, in a fixed order, and the device-side decision) -> update (one launch per
buffer). The partial sums have fixed slots, so results are deterministic.

The interpreter has no bfloat16 (numpy lacks it): on CPU, bfloat16 raises a
TypeError; on a GPU all of float32, float16 and bfloat16 run.
"""

from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl

BLOCK = 4096      # elements per program
FIN_BLOCK = 1024  # partial slots summed per step of the finalize loop


@triton.jit
def _block_offsets(pid, BLOCK: tl.constexpr):
    # 64-bit: with 32-bit offsets a buffer of 2**31 - BLOCK elements or more would wrap.
    return pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)


@triton.jit
def _reduce_kernel(a_ptr, b_ptr, partial_ptr, n, DOT: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = _block_offsets(pid, BLOCK)
    mask = offs < n
    b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if DOT:  # project: <a, b> and <a, a>
        a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(partial_ptr + 2 * pid, tl.sum(a * b, axis=0))
        tl.store(partial_ptr + 2 * pid + 1, tl.sum(a * a, axis=0))
    else:  # sam: <b, b>
        tl.store(partial_ptr + 2 * pid, 0.0)
        tl.store(partial_ptr + 2 * pid + 1, tl.sum(b * b, axis=0))


@triton.jit
def _finalize_kernel(partial_ptr, parts, stats_ptr, bad_ptr, coef_ptr, alpha, delta, rho,
                     PROJECT: tl.constexpr, FIN_BLOCK: tl.constexpr):
    # Totals of all slots in one fixed order, in float64.
    acc_d = tl.zeros((FIN_BLOCK,), dtype=tl.float64)
    acc_n = tl.zeros((FIN_BLOCK,), dtype=tl.float64)
    for start in range(0, parts, FIN_BLOCK):
        k = start + tl.arange(0, FIN_BLOCK)
        acc_d += tl.load(partial_ptr + 2 * k, mask=k < parts, other=0.0).to(tl.float64)
        acc_n += tl.load(partial_ptr + 2 * k + 1, mask=k < parts, other=0.0).to(tl.float64)
    dot = tl.sum(acc_d, axis=0)
    n2 = tl.sum(acc_n, axis=0)
    if PROJECT:
        dot_f = dot.to(tl.float32)
        n2_f = n2.to(tl.float32)
        neg = dot < 0
        c = tl.where(neg, dot, 0.0) / tl.where(neg, n2 + delta, 1.0)
        coef = (1.0 - alpha - alpha * c).to(tl.float32)
        # x - x is NaN exactly for NaN/Inf; an infinite coefficient (||g||^2 -> 0, delta = 0) too.
        bad = ((dot_f - dot_f) != 0) | ((n2_f - n2_f) != 0) | ((coef - coef) != 0)
        tl.store(stats_ptr, dot_f)
        tl.store(stats_ptr + 1, n2_f)
        tl.store(coef_ptr, coef)
    else:
        norm = tl.sqrt(n2)
        norm_f = norm.to(tl.float32)
        bad = (norm_f - norm_f) != 0
        scale = tl.where(bad | (norm == 0), 0.0, rho / (tl.where(bad, 1.0, norm) + 1e-12))
        tl.store(stats_ptr, norm_f)
        tl.store(coef_ptr, scale.to(tl.float32))
    tl.store(bad_ptr, bad.to(tl.int8))


@triton.jit
def _mix_kernel(g_ptr, r_ptr, coef_ptr, bad_ptr, n, alpha, BLOCK: tl.constexpr):
    offs = _block_offsets(tl.program_id(0), BLOCK)
    ok = tl.load(bad_ptr) == 0  # non-finite statistics: leave the grads as they are
    mask = (offs < n) & ok
    a = tl.load(coef_ptr)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    r = tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(g_ptr + offs, (a * g + alpha * r).to(g_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _perturb_kernel(p_ptr, g_ptr, backup_ptr, coef_ptr, n, BLOCK: tl.constexpr):
    offs = _block_offsets(tl.program_id(0), BLOCK)
    mask = offs < n
    scale = tl.load(coef_ptr)
    p = tl.load(p_ptr + offs, mask=mask, other=0.0)
    tl.store(backup_ptr + offs, p, mask=mask)
    # Zero or non-finite norm (scale 0): p stays bit for bit. Compared as a vector: the
    # interpreter cannot AND a mask with a scalar comparison.
    move = mask & (tl.zeros((BLOCK,), dtype=tl.float32) != scale)
    g = tl.load(g_ptr + offs, mask=move, other=0.0).to(tl.float32)
    tl.store(p_ptr + offs, (p.to(tl.float32) + scale * g).to(p_ptr.dtype.element_ty), mask=move)


def _interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _check_dtypes(tensors):
    if tensors[0].device.type == "cpu" and _interpreting():
        for i, t in enumerate(tensors):
            if t.dtype == torch.bfloat16:
                raise TypeError(
                    f"tensor {i} is torch.bfloat16, which the Triton interpreter (TRITON_INTERPRET=1, "
                    f"Triton on CPU) cannot run; use backend='cpu' or 'reference' for bfloat16 on CPU."
                )


def _on_device(device: torch.device):
    """Triton launches on the current CUDA device and its current stream: make that the tensors'."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _flat(t):
    return t.view(-1) if t.is_contiguous() else t.contiguous().view(-1)


def _write_back(targets, work):
    for t, w in zip(targets, work, strict=True):
        if w.data_ptr() != t.data_ptr() or not t.is_contiguous():
            t.copy_(w.view(t.shape))


def _reduce(first, second, dot):
    """Partial sums of every tensor into fixed slots: (partials, slot count)."""
    counts = [triton.cdiv(t.numel(), BLOCK) for t in first]
    parts = sum(counts)
    partial = torch.empty(2 * max(parts, 1), dtype=torch.float32, device=first[0].device)
    base = 0
    for a, b, count in zip(first, second, counts, strict=True):
        if count:
            _reduce_kernel[(count,)](a, b, partial[2 * base:], a.numel(), DOT=dot, BLOCK=BLOCK)
        base += count
    return partial, parts


def _outputs(device):
    # The finalize kernel writes all three: no fill launches needed.
    stats = torch.empty(2, dtype=torch.float32, device=device)
    coef = torch.empty(1, dtype=torch.float32, device=device)
    bad = torch.empty(1, dtype=torch.int8, device=device)
    return stats, coef, bad


def project_interpolate_(grads, ref_grads, alpha, delta):
    with _on_device(grads[0].device):
        return _project_interpolate(grads, ref_grads, alpha, delta)


def _project_interpolate(grads, ref_grads, alpha, delta):
    _check_dtypes(grads)
    g = [_flat(t) for t in grads]
    r = [_flat(t) for t in ref_grads]
    partial, parts = _reduce(g, r, True)
    stats, coef, bad = _outputs(g[0].device)
    _finalize_kernel[(1,)](partial, parts, stats, bad, coef, alpha, delta, 0.0, PROJECT=True, FIN_BLOCK=FIN_BLOCK)
    for gt, rt in zip(g, r, strict=True):
        if gt.numel():
            _mix_kernel[(triton.cdiv(gt.numel(), BLOCK),)](gt, rt, coef, bad, gt.numel(), alpha, BLOCK=BLOCK)
    _write_back(grads, g)
    return stats[0], stats[1], bad.view(torch.bool)[0]


def sam_perturb_(params, grads, backup, rho):
    with _on_device(params[0].device):
        return _sam_perturb(params, grads, backup, rho)


def _sam_perturb(params, grads, backup, rho):
    _check_dtypes(params)
    p = [_flat(t) for t in params]
    g = [_flat(t) for t in grads]
    b = [_flat(t) for t in backup]
    partial, parts = _reduce(p, g, False)
    stats, coef, bad = _outputs(p[0].device)
    _finalize_kernel[(1,)](partial, parts, stats, bad, coef, 0.0, 0.0, rho, PROJECT=False, FIN_BLOCK=FIN_BLOCK)
    for pt, gt, bt in zip(p, g, b, strict=True):
        if pt.numel():
            _perturb_kernel[(triton.cdiv(pt.numel(), BLOCK),)](pt, gt, bt, coef, pt.numel(), BLOCK=BLOCK)
    _write_back(params, p)
    _write_back(backup, b)
    return stats[0], bad.view(torch.bool)[0]


def sam_restore_(params, backup):
    """A restore is a copy: torch's multi-tensor copy already runs at copy bandwidth."""
    with _on_device(params[0].device):
        torch._foreach_copy_(params, backup)
