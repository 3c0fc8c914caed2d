"""What the ops hand back: device tensors only, so reading them never forces a host sync."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SamState:
    """What `sam_restore_` needs to undo `sam_perturb_`, plus the step's health.

    backup: one entry per parameter passed to `sam_perturb_`: a copy of the
        parameter before the perturbation, or None where the pair was skipped
        (its grad was None).
    grad_norm: 0-d float32 tensor on the parameters' device, ||g||_2 over all grads.
    nonfinite: 0-d bool tensor, True when the norm is NaN/Inf (no parameter was moved).
    backend: the backend that ran.
    """

    backup: list[torch.Tensor | None]
    grad_norm: torch.Tensor
    nonfinite: torch.Tensor
    backend: str


@dataclass
class ProjectStats:
    """Global statistics of one `project_interpolate_` call (all 0-d device tensors).

    dot: <g, g'> over all tensors (float32). norm_sq: ||g||^2 (float32).
    nonfinite: True when dot or norm_sq is NaN/Inf; the grads were then left unchanged.
    backend: the backend that ran.
    """

    dot: torch.Tensor
    norm_sq: torch.Tensor
    nonfinite: torch.Tensor
    backend: str
