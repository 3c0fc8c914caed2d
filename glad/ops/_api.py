"""The public functional API: validate once, pick a backend, run it under no_grad."""

from __future__ import annotations

import math
import numbers

import torch

from glad.ops._dispatch import implementation, resolve
from glad.ops._types import ProjectStats, SamState
from glad.ops._validate import _as_list, cached_check, check_pairs


def _finite_number(value, name, *, minimum=None):
    if isinstance(value, torch.Tensor) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a Python number, got {type(value).__name__}; "
                        f"pass float({name}) (a tensor would force a host sync).")
    value = float(value)
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name}={value} must be a finite number{bound}.")
    return value


def _empty_stats(count):
    zero = torch.zeros((), dtype=torch.float32)
    return [zero.clone() for _ in range(count)] + [torch.zeros((), dtype=torch.bool)]


def sam_perturb_(params, grads, rho, *, backend="auto", backup=None):
    """SAM ascent step over all tensors as one vector: p <- p + rho * g / (||g||_2 + 1e-12).

    The norm is taken over every grad together (float32 accumulation or wider).
    Pairs whose grad is None are skipped. When the norm is zero or not finite no
    parameter moves (and no NaN is written). Parameters are written in place, in
    their existing storage.

    backup: optional list (one entry per parameter, None allowed) to copy the
        parameters into, e.g. `state.backup` of the previous step; reusing it
        saves an allocation (and, for large models, its page faults) every step.

    Returns a `SamState` holding the backups for `sam_restore_`, the global
    grad norm and a non-finite flag, all device tensors (no host sync).
    """
    params = _as_list(params, "params")
    rho = _finite_number(rho, "rho", minimum=0.0)
    ps, gs, kept = check_pairs(params, grads, "params", "grads")
    full = [None] * len(params)
    if not ps:
        norm, nonfinite = _empty_stats(1)
        return SamState(full, norm, nonfinite, "reference")
    name = resolve(backend, ps[0].device)
    saved = _backup_buffers(params, ps, kept, backup)
    with torch.no_grad():
        norm, nonfinite = implementation(name).sam_perturb_(ps, gs, saved, rho)
    for i, b in zip(kept, saved, strict=True):
        full[i] = b
    return SamState(full, norm, nonfinite, name)


def _backup_buffers(params, ps, kept, backup):
    """The tensors the backups go to: `backup`'s entries where they fit, fresh ones elsewhere.
    Reusing the previous step's backups, the check is cached like the pairs' (see cached_check)."""
    if backup is None:
        return _check_backup(params, ps, kept, None)
    backup = _as_list(backup, "backup")
    key = ("backup", id(ps[0]), len(ps))
    return cached_check(key, (ps, backup), lambda: _check_backup(params, ps, kept, backup),
                        outputs=lambda out: (ps, out))  # the params' layout is part of what was checked


def _check_backup(params, ps, kept, backup):
    if backup is not None:
        backup = _as_list(backup, "backup")
        if len(backup) != len(params):
            raise ValueError(f"backup has {len(backup)} entries but params has {len(params)}; pass "
                             f"the backup list of a state made for these same params.")
    out = []
    for p, i in zip(ps, kept, strict=True):
        b = None if backup is None else backup[i]
        if b is None or b.shape != p.shape or b.dtype != p.dtype or b.device != p.device:
            b = torch.empty(p.shape, dtype=p.dtype, device=p.device)
        elif b.untyped_storage().data_ptr() == p.untyped_storage().data_ptr():
            raise ValueError(f"backup[{i}] shares memory with params[{i}]; pass a separate buffer.")
        out.append(b)
    return out


def sam_restore_(params, state):
    """Undoes `sam_perturb_`: copies every backup into its parameter's storage, bit-exactly."""
    if not isinstance(state, SamState):
        raise TypeError(f"state must be the SamState returned by sam_perturb_, got {type(state).__name__}.")
    ps, bs, _ = check_pairs(params, state.backup, "params", "state.backup", check_alias=False)
    if not ps:
        return
    try:
        name = resolve(state.backend, ps[0].device)
    except RuntimeError:  # e.g. the state was moved to another device: any backend can copy
        name = "reference"
    with torch.no_grad():
        implementation(name).sam_restore_(ps, bs)


def project_interpolate_(grads, ref_grads, alpha, delta=1e-12, *, backend="auto"):
    """GLAD's conflict projection and interpolation, in place on `grads`.

    With dot = <g, g'> and n2 = ||g||^2 over ALL tensors as one vector:
    c = min(dot, 0) / (n2 + delta) and g <- (1 - alpha - alpha*c) g + alpha g'.
    `ref_grads` (g') is only read. Pairs holding a None are skipped. The
    branch on the sign of dot runs on the device (no host sync). When dot or n2
    or the coefficient is not finite (e.g. ||g||^2 vanishing with delta = 0), `grads` are left
    unchanged and `nonfinite` is set.

    Returns `ProjectStats` (dot, norm_sq, nonfinite as 0-d device tensors).
    """
    alpha = _finite_number(alpha, "alpha")
    delta = _finite_number(delta, "delta", minimum=0.0)
    gs, rs, _ = check_pairs(grads, ref_grads, "grads", "ref_grads")
    if not gs:
        dot, norm_sq, nonfinite = _empty_stats(2)
        return ProjectStats(dot, norm_sq, nonfinite, "reference")
    name = resolve(backend, gs[0].device)
    with torch.no_grad():
        dot, norm_sq, nonfinite = implementation(name).project_interpolate_(gs, rs, alpha, delta)
    return ProjectStats(dot, norm_sq, nonfinite, name)
