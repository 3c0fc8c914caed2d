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
    """Context manager: each entry starts from the random state captured at the first entry."""

    def __init__(self):
        self._cpu = None
        self._cuda = None

    def reset(self) -> None:
        """Forget the recorded state: the next entry records a fresh one."""
        self._cpu = self._cuda = None

    def __enter__(self) -> RngReplay:
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        if self._cpu is None:
            self._cpu = torch.get_rng_state()
            self._cuda = torch.cuda.get_rng_state_all() if cuda else None
        else:
            torch.set_rng_state(self._cpu)
            if self._cuda is not None:
                torch.cuda.set_rng_state_all(self._cuda)
        return self

    def __exit__(self, *exc) -> None:
        return None
