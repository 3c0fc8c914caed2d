"""The few collectives GradReg needs beyond what DistributedDataParallel does in backward."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def ddp_group(model) -> tuple[bool, object]:
    """(is the model DDP-wrapped in a live multi-rank job, its process group)."""
    if not isinstance(model, DistributedDataParallel):
        return False, None
    if not (dist.is_available() and dist.is_initialized()):
        return False, None
    group = getattr(model, "process_group", None)
    return dist.get_world_size(group) > 1, group


def all_reduce_mean_(tensors: list[torch.Tensor], group) -> None:
    """Average `tensors` over the ranks in place, one collective per dtype/device bucket."""
    world = dist.get_world_size(group)
    buckets: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        buckets.setdefault((t.dtype, t.device), []).append(t)
    for bucket in buckets.values():
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.all_reduce(flat, group=group)
        flat.div_(world)
        torch._foreach_copy_(bucket, [v.view_as(t) for v, t in
                                      zip(flat.split([t.numel() for t in bucket]), bucket, strict=True)])


def sum_over_ranks(value: torch.Tensor, group) -> torch.Tensor:
    """`value` (0-d float) summed over the ranks: non-finite on every rank when it is on any,
    so that all ranks agree on skipping a step."""
    value = value.reshape(1).clone()
    dist.all_reduce(value, group=group)
    return value[0]
