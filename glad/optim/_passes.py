"""What makes the second (perturbed) pass see the same world as the first.

Two forward/backward passes of one GradReg step must differ only in the
parameters: the same batch (the closure's job: it closes over one batch), the
same random draws (dropout masks), and the perturbed pass must leave no trace in
the model's running statistics (BatchNorm).
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase


def running_stat_layers(model: torch.nn.Module | None) -> list[torch.nn.Module]:
    """The normalisation layers of `model` that keep running statistics (found once, reused)."""
    if model is None:
        return []
    return [m for m in model.modules() if isinstance(m, _NormBase) and m.track_running_stats]


@contextlib.contextmanager
def frozen_running_stats(layers: list[torch.nn.Module]):
    """Inside, the given normalisation layers use batch statistics but update nothing.

    BatchNorm (and SyncBatchNorm) in training mode with ``track_running_stats``
    switched off normalise with the batch's statistics, exactly as in the first
    pass, and neither touch ``running_mean/var`` nor count ``num_batches_tracked``;
    flipping the flag costs nothing. Other layers with running statistics
    (InstanceNorm with ``track_running_stats=True``) update them whatever the
    flag says, so their buffers are copied and put back instead. Layers in eval
    mode update nothing and are left alone.
    """
    flipped, saved = [], []
    for m in layers:
        if not (m.training and m.track_running_stats):
            continue
        if isinstance(m, _BatchNorm):
            m.track_running_stats = False
            flipped.append(m)
        else:
            saved.append([(b, b.clone()) for b in m.buffers(recurse=False) if b is not None])
    try:
        yield
    finally:
        for m in flipped:
            m.track_running_stats = True
        with torch.no_grad():
            for buffers in saved:
                for live, copy in buffers:
                    live.copy_(copy)
