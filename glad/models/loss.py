"""The GLAD training loss: cross-entropy plus KL to the frozen zero-shot model (SPEC section 1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def glad_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None = None,
              kl_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``CE(logits, labels) + kl_weight * KL(p_zs || p_ft)``, KL averaged over images.

    ``p_zs = softmax(teacher_logits)`` (the zero-shot model, treated as a constant) and
    ``p_ft = softmax(logits)``, both at temperature 1. Without ``teacher_logits`` (or with
    ``kl_weight == 0``) the loss is plain CE and the KL part is reported as 0.

    Returns ``(loss, {"ce": ..., "kl": ...})``; the parts are detached 0-d tensors (no host
    sync: call ``.item()`` only when logging).
    """
    if not (isinstance(kl_weight, int | float) and math.isfinite(kl_weight) and kl_weight >= 0):
        raise ValueError(f"kl_weight must be a finite number >= 0, got {kl_weight!r}")
    if logits.dim() != 2:
        raise ValueError(f"logits must be [batch, classes], got shape {tuple(logits.shape)}")
    logits = logits.float()
    ce = F.cross_entropy(logits, labels)
    if teacher_logits is None or kl_weight == 0:
        kl = ce.new_zeros(())
        loss = ce
    else:
        if teacher_logits.shape != logits.shape:
            raise ValueError(f"teacher_logits shape {tuple(teacher_logits.shape)} != logits shape "
                             f"{tuple(logits.shape)}; compute both on the same images and classes")
        log_p_ft = F.log_softmax(logits, dim=-1)
        log_p_zs = F.log_softmax(teacher_logits.detach().float(), dim=-1)
        # kl_div(input=log q, target=log p) = sum p (log p - log q) = KL(p || q)
        kl = F.kl_div(log_p_ft, log_p_zs, reduction="batchmean", log_target=True)
        loss = ce + kl_weight * kl
    return loss, {"ce": ce.detach(), "kl": kl.detach()}
