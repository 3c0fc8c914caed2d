"""Plain-torch backend: the test oracle and the fallback on every device.

Low-precision tensors are upcast to float32 for all arithmetic, so the result is
rounded once, like the fused kernels. Reductions accumulate in float32.
"""

from __future__ import annotations

import torch

TINY = 1e-12  # added to ||g|| in the SAM scale, as in the spec


def _upcast(tensors):
    return [t if t.dtype == torch.float32 else t.float() for t in tensors]


def _write_unless(skip, targets, values):
    """targets[i] <- values[i] where `skip` (0-d bool) is False; untouched bit for bit otherwise.

    A plain `t + 0 * v` would turn Inf in v into NaN, hence torch.where.
    """
    for t, v in zip(targets, values, strict=True):
        if t.dtype == v.dtype and t.is_contiguous():
            torch.where(skip, t, v, out=t)
        else:
            t.copy_(torch.where(skip, t, v))


def project_interpolate_(grads, ref_grads, alpha, delta):
    """In place: g <- (1 - alpha - alpha*c) g + alpha g', c = min(<g,g'>, 0) / (||g||^2 + delta)."""
    g32 = _upcast(grads)
    r32 = _upcast(ref_grads)
    flat = [(g.reshape(-1), r.reshape(-1)) for g, r in zip(g32, r32, strict=True)]
    dot = torch.stack([torch.dot(g, r) for g, r in flat]).sum()
    norm_sq = torch.stack([torch.dot(g, g) for g, _ in flat]).sum()
    # Only a negative dot divides, so delta = 0 with all-zero grads cannot make 0/0.
    c = torch.where(dot < 0, dot / (norm_sq + delta), 0.0)
    coef = 1.0 - alpha - alpha * c
    # A finite dot over a vanishing ||g||^2 (delta = 0) gives an infinite coefficient: flagged too.
    nonfinite = ~(torch.isfinite(dot) & torch.isfinite(norm_sq) & torch.isfinite(coef))
    new = torch._foreach_mul(g32, coef)
    torch._foreach_add_(new, r32, alpha=alpha)
    _write_unless(nonfinite, grads, new)
    return dot, norm_sq, nonfinite


def sam_perturb_(params, grads, backup, rho):
    """backup <- p; p <- p + rho g / (||g|| + 1e-12); returns (norm, nonfinite)."""
    torch._foreach_copy_(backup, params)
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32)))
    nonfinite = ~torch.isfinite(norm)
    skip = nonfinite | (norm == 0)
    scale = torch.where(skip, 0.0, rho / (norm + TINY))
    new = torch._foreach_mul(_upcast(grads), scale)
    torch._foreach_add_(new, _upcast(params))
    _write_unless(skip, params, new)
    return norm, nonfinite


def sam_restore_(params, backup):
    """Copies every backup into its parameter's existing storage (bit-exact)."""
    torch._foreach_copy_(params, backup)
