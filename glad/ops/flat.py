"""Flat buffers: many small tensors as views of one contiguous buffer per (device, dtype).

At LoRA size (~150 tensors, ~1M values) the ops cost launches and per-tensor dispatch, not
bandwidth: laid out flat, every op sees one tensor per (device, dtype). Three pieces:

* `FlatParamLayout` moves the parameters' values into one buffer (each ``p.data`` a view);
* `FlatGrads` keeps one or two persistent sets of gradient buffers (each ``p.grad`` a view
  of the set attached last), which GradReg's two passes fill without allocating or copying
  when the closure zeroes with ``zero_grad(set_to_none=False)``; with ``set_to_none=True``
  autograd allocates fresh gradients and `FlatGrads.harvest` copies them in;
* `FlatParams`, both for one set, for using the ops by hand:

    flat = FlatParams(model.trainable_parameters())
    ... loss.backward() ...
    flat.attach_grads()            # re-attaches views if a grad was replaced
    project_interpolate_(flat.grads_flat, saved, alpha=0.5)
    flat.zero_grad()               # zero in place (keeps the views; no set_to_none)

Parameters laid out flat share one storage without overlapping (safetensors and torch.save
handle that); `check_storage` tells when something re-allocated them since.
"""

from __future__ import annotations

import torch


def _groups(params) -> dict[tuple[torch.device, torch.dtype], list[int]]:
    """Parameter indices per (device, dtype), in first-seen order (the buffers' order)."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault((p.device, p.dtype), []).append(i)
    return groups


class FlatParamLayout:
    """Moves the parameters' values into one buffer per (device, dtype) (opt-in, see GradReg).

    Each ``p.data`` becomes a view of its group's buffer, in the same order as
    `FlatGrads`, so the perturbation and its undo run on one tensor per group.
    The parameters then share one storage without overlapping (safetensors and
    torch.save handle that). GradReg checks every step that they still live
    where they were put.
    """

    def __init__(self, params: list[torch.Tensor]):
        self.params = params
        self.flat: list[torch.Tensor] = []
        with torch.no_grad():
            for (device, dtype), members in _groups(params).items():
                buf = torch.empty(sum(params[i].numel() for i in members), dtype=dtype, device=device)
                offset = 0
                for i in members:
                    p = params[i]
                    view = buf[offset:offset + p.numel()].view(p.shape)
                    view.copy_(p)
                    p.data = view
                    offset += p.numel()
                self.flat.append(buf)


def check_storage(params: list[torch.Tensor], pointers: list[int]) -> None:
    """Raises when something re-allocated a parameter (``model.to()``, ``.half()``) since `pointers`.

    GradReg's gradient buffers (and its flat parameter layout) were made for the
    parameters as they were; ~0.1 us per parameter.
    """
    if [p.data_ptr() for p in params] != pointers:
        raise RuntimeError("a parameter was re-allocated since GradReg was built: was the model "
                           "moved or cast after GradReg was built? Build GradReg (and its base "
                           "optimizer) after model.to(...) / .half()")


class FlatGrads:
    """`count` (1 or 2) sets of flat gradient buffers over `params`, one per (device, dtype);
    every ``p.grad`` is a view into the set attached last."""

    def __init__(self, params: list[torch.Tensor], count: int = 2):
        self.params = params
        groups = _groups(params)
        self.flat: list[list[torch.Tensor]] = [[] for _ in range(count)]
        self.views: list[list[torch.Tensor | None]] = [[None] * len(params) for _ in range(count)]
        for (device, dtype), members in groups.items():
            total = sum(params[i].numel() for i in members)
            for k in range(count):
                buf = torch.zeros(total, dtype=dtype, device=device)
                offset = 0
                for i in members:
                    n = params[i].numel()
                    self.views[k][i] = buf[offset:offset + n].view(params[i].shape)
                    offset += n
                self.flat[k].append(buf)
        # which parameters received a gradient in the last harvest of each buffer
        self.present: list[list[bool]] = [[False] * len(params) for _ in range(count)]
        self.complete = [False] * count  # every parameter present in the last harvest

    def harvest(self, k: int) -> None:
        """Moves the current gradients into buffer `k` and points each ``p.grad`` at its view.

        A parameter without a gradient reads as zeros in the buffer and keeps ``grad=None``.
        """
        present = self.present[k]
        for i, (p, v) in enumerate(zip(self.params, self.views[k], strict=True)):
            g = p.grad
            if g is v:
                present[i] = True
                continue
            if g is None:
                v.zero_()
                present[i] = False
                continue
            v.copy_(g)
            p.grad = v
            present[i] = True
        self.complete[k] = all(present)

    def attach(self, k: int, zero: bool = False) -> None:
        """Points every ``p.grad`` at buffer `k` (optionally zeroed first), for the next backward."""
        if zero:
            for buf in self.flat[k]:
                buf.zero_()
        for p, v in zip(self.params, self.views[k], strict=True):
            if p.grad is not v:
                p.grad = v

    def attach_used(self, k: int) -> None:
        """Points ``p.grad`` at buffer `k` where either pass produced a gradient, else None.

        So a parameter that no pass touched stays untouched by the base optimizer
        (no weight decay, no moment update), as in a plain step.
        """
        if any(self.complete):
            self.attach(k)
            return
        for i, (p, v) in enumerate(zip(self.params, self.views[k], strict=True)):
            want = v if any(flags[i] for flags in self.present) else None
            if p.grad is not want:
                p.grad = want

    def norm(self, k: int) -> torch.Tensor:
        """Global L2 norm of buffer `k` in float32 (on the first buffer's device)."""
        norms = [torch.linalg.vector_norm(b, dtype=torch.float32) for b in self.flat[k]]
        if len(norms) == 1:
            return norms[0]
        device = norms[0].device
        return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))

    def scale_(self, k: int, factor: torch.Tensor) -> None:
        """Multiplies buffer `k` by the 0-d tensor `factor` (no host sync)."""
        for b in self.flat[k]:
            b.mul_(factor if (factor.device == b.device and factor.dtype == b.dtype)
                   else factor.to(b.device, b.dtype))


class FlatParams:
    """A model's trainable parameters and their grads as views of one buffer per (device, dtype):
    `params_flat[k]` and `grads_flat[k]`. Build it before creating the optimizer; values and
    existing grads are kept, and a parameter without a grad reads as zeros."""

    def __init__(self, params):
        self.params = [p for p in params if p.requires_grad]
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("FlatParams got the same parameter twice; pass each parameter once "
                             "(e.g. list(dict.fromkeys(params))).")
        self.keys = list(_groups(self.params))
        self._layout = FlatParamLayout(self.params)
        self._grads = FlatGrads(self.params, count=1)
        self.attach_grads()

    @property
    def params_flat(self) -> list[torch.Tensor]:
        return self._layout.flat

    @property
    def grads_flat(self) -> list[torch.Tensor]:
        return self._grads.flat[0]

    def attach_grads(self) -> list[torch.Tensor]:
        """Makes every `p.grad` a view of `grads_flat` again (a replaced grad is copied into its
        slot, a None grad becomes zeros); returns `grads_flat`."""
        with torch.no_grad():
            self._grads.harvest(0)
            self._grads.attach(0)
        return self.grads_flat

    def zero_grad(self) -> None:
        """Zeros every grad in place (one fill per buffer), keeping the views attached."""
        with torch.no_grad():
            self._grads.attach(0, zero=True)

    def __len__(self):
        return len(self.params)

    def __repr__(self):
        parts = ", ".join(f"{d}/{t}: {b.numel()}" for (d, t), b in zip(self.keys, self.params_flat, strict=True))
        return f"FlatParams({len(self.params)} tensors; {parts})"
