"""Replaying random state, so that LoRA dropout draws the same masks in both passes of a step.

GradReg / SAM evaluate the loss twice per step (at theta and at theta + eps); with LoRA
dropout on, both passes must see the same masks (SPEC section 1). Wrap the forward of
each pass in the same ``RngReplay``: the first entry records the random state, every
later entry rewinds to it. Call ``reset()`` before the next step.

    replay = RngReplay()
    def closure():
        with replay:
            loss = ...
        ...
    optimizer.step(closure)
    replay.reset()
"""

from __future__ import annotations

import torch


class RngReplay:
    """The random state of the CPU generator and of the CUDA generators of `devices`, recorded
    and replayed: `capture()` / `restore()`, or as a context manager whose first entry records
    and every later entry rewinds (`reset()` forgets the record).

    `devices`: the devices whose generators matter (e.g. those of the parameters). None: every
    visible CUDA device, decided when the state is recorded, whether or not CUDA was used yet.
    """

    def __init__(self, devices=None):
        self._devices = None if devices is None else sorted(
            {d.index if d.index is not None else torch.cuda.current_device()
             for d in map(torch.device, devices) if d.type == "cuda"})
        self._cpu = None
        self._cuda: list[tuple[int, torch.Tensor]] = []

    def _cuda_indices(self) -> list[int]:
        if self._devices is not None:
            return self._devices
        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []

    def capture(self) -> None:
        self._cpu = torch.get_rng_state()
        self._cuda = [(i, torch.cuda.get_rng_state(i)) for i in self._cuda_indices()]

    def restore(self) -> None:
        if self._cpu is None:
            raise RuntimeError("RngReplay.restore() before capture(): nothing recorded")
        torch.set_rng_state(self._cpu)
        for i, state in self._cuda:
            torch.cuda.set_rng_state(state, i)

    def reset(self) -> None:
        """Forget the recorded state: the next entry records a fresh one."""
        self._cpu, self._cuda = None, []

    def __enter__(self) -> RngReplay:
        if self._cpu is None:
            self.capture()
        else:
            self.restore()
        return self

    def __exit__(self, *exc) -> None:
        return None
