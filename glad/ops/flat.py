"""FlatParams: a model's trainable parameters and grads as views of one buffer per dtype.

At LoRA size the ops cost launches and per-tensor dispatch, not bandwidth: with
the tensors laid out in one contiguous buffer, every op sees one flat tensor
per (device, dtype) instead of ~150 small ones.
"""

from __future__ import annotations

import torch


class FlatParams:
    """Moves `params` (and their `.grad`) into one contiguous buffer per (device, dtype).

    Each parameter's `.data` becomes a view of `params_flat[k]` and its `.grad`
    a view of `grads_flat[k]`, so the ops can run on the flat lists:

        flat = FlatParams(model.trainable_parameters())
        ... loss.backward() ...
        flat.attach_grads()            # re-attaches views if a grad was replaced
        project_interpolate_(flat.grads_flat, saved, alpha=0.5)
        flat.zero_grad()               # zero in place (keeps the views; no set_to_none)

    Build it before creating the optimizer. Parameter values and existing grads
    are preserved. A parameter that gets no gradient reads as zeros in the flat
    grads (the ops then treat it as a zero contribution).
    """

    def __init__(self, params):
        self.params = [p for p in params if p.requires_grad]
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("FlatParams got the same parameter twice; pass each parameter once "
                             "(e.g. list(dict.fromkeys(params))).")
        groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, p in enumerate(self.params):
            groups.setdefault((p.device, p.dtype), []).append(i)
        self.keys = list(groups)
        self.params_flat: list[torch.Tensor] = []
        self.grads_flat: list[torch.Tensor] = []
        self._grad_views: list[torch.Tensor | None] = [None] * len(self.params)
        with torch.no_grad():
            for (device, dtype), members in groups.items():
                total = sum(self.params[i].numel() for i in members)
                pbuf = torch.empty(total, dtype=dtype, device=device)
                gbuf = torch.zeros(total, dtype=dtype, device=device)
                offset = 0
                for i in members:
                    p = self.params[i]
                    n = p.numel()
                    pview = pbuf[offset:offset + n].view(p.shape)
                    gview = gbuf[offset:offset + n].view(p.shape)
                    pview.copy_(p)
                    if p.grad is not None:
                        gview.copy_(p.grad)
                    p.data = pview  # once, at setup: later ops write into this storage in place
                    p.grad = gview
                    self._grad_views[i] = gview
                    offset += n
                self.params_flat.append(pbuf)
                self.grads_flat.append(gbuf)

    def attach_grads(self):
        """Makes every `p.grad` a view of `grads_flat` again; returns `grads_flat`.

        Needed only when something replaced a grad (e.g. `zero_grad(set_to_none=True)`
        before backward): a new grad is copied into its slot, a None grad becomes zeros.
        """
        with torch.no_grad():
            for p, view in zip(self.params, self._grad_views, strict=True):
                g = p.grad
                if g is view:
                    continue
                if g is None:
                    view.zero_()
                else:
                    view.copy_(g)
                p.grad = view
        return self.grads_flat

    def zero_grad(self):
        """Zeros every grad in place (one fill per buffer), keeping the views attached."""
        self.attach_grads()
        for g in self.grads_flat:
            g.zero_()

    def __len__(self):
        return len(self.params)

    def __repr__(self):
        parts = ", ".join(f"{d}/{t}: {b.numel()}" for (d, t), b in zip(self.keys, self.params_flat, strict=True))
        return f"FlatParams({len(self.params)} tensors; {parts})"
