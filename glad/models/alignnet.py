"""AlignNet (paper 3.3): an MLP that shifts each class text feature towards the image.

For an image feature f and a class text feature t (both L2-normalised),
``pi = MLP([f ; t])``, ``t~ = normalize(t + pi)`` and the logit is ``s * <f, t~>``.
Every (image, class) pair needs its own MLP row, so B images x C classes cost B*C rows.

``AlignNet.logits`` never builds the B x C x 2D input nor the B x C x D output:

* the first layer is linear in the concatenation, so ``W1 [f; t] = W1_f f + W1_t t``:
  B image rows plus C class rows, added per pair;
* with the last hidden activation h (size H) and last layer ``pi = W h + b``,
  ``<f, t + pi> = <f, t> + <W^T f, h> + <f, b>`` and
  ``|t + pi|^2 = |t + b|^2 + 2 <W^T (t + b), h> + h^T (W^T W) h``,
  so per pair only H-sized vectors are needed, never D-sized ones;
* the pairs are processed in class chunks sized to a memory budget; when gradients are
  needed and the whole would not fit, each chunk is recomputed in backward instead of
  stored (activation checkpointing).

``naive_alignnet_logits`` is the direct formula, kept as the test oracle and benchmark
baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# 64 MiB: big enough to keep a GPU busy, and on a CPU each temporary stays below glibc's
# mmap threshold (32 MiB), so chunks reuse heap memory instead of faulting in fresh pages.
DEFAULT_CHUNK_BUDGET_BYTES = 64 * 2**20
_EPS = 1e-12  # as F.normalize


def _safe_norm(norm_sq: torch.Tensor) -> torch.Tensor:
    return norm_sq.clamp_min(_EPS * _EPS).sqrt()


def cosine_logits(image_features: torch.Tensor, text_features: torch.Tensor, scale) -> torch.Tensor:
    """``scale * <f, t / |t|>`` for every pair: the logits without AlignNet.

    Text features are re-normalised here (a no-op up to rounding for unit vectors) so that
    this is bit-for-bit what ``AlignNet.logits`` computes when its last layer is zero:
    a fresh GLAD model's logits equal the zero-shot ones exactly.
    """
    norm = _safe_norm((text_features * text_features).sum(-1))
    return scale * ((image_features @ text_features.t()) / norm)


class AlignNet(nn.Module):
    """MLP ``2D -> hidden... -> D`` with ReLU between layers and a zero-initialised last layer.

    Args:
        embed_dim: D, the CLIP embedding size (512 for ViT-B/16; the input is 2D = 1024).
        hidden: hidden layer widths (paper: 256, 128).
    """

    switchable = True  # adapters_disabled switches it off (pi = 0) through `disabled`

    def __init__(self, embed_dim: int, hidden: Sequence[int] = (256, 128), *, device=None, dtype=None):
        super().__init__()
        if embed_dim < 1 or not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"AlignNet needs embed_dim >= 1 and non-empty positive hidden sizes, "
                             f"got embed_dim={embed_dim}, hidden={list(hidden)}")
        self.embed_dim, self.hidden = embed_dim, tuple(int(h) for h in hidden)
        sizes = [2 * embed_dim, *self.hidden, embed_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b, device=device, dtype=dtype)
                                    for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        # Zero last layer: pi = 0 at step 0, so GLAD starts exactly at zero-shot CLIP.
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)
        self.disabled = False  # set by adapters_disabled

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """``pi`` for concatenated ``[f ; t]`` rows of shape ``[..., 2D]``."""
        x = pairs
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor, scale,
               chunk_budget_bytes: int = DEFAULT_CHUNK_BUDGET_BYTES) -> torch.Tensor:
        """``[B, C]`` logits ``scale * <f, normalize(t + pi(f, t))>``, memory-bounded (see module doc)."""
        f = image_features.to(self.layers[0].weight.dtype)
        t = text_features.to(f.dtype)
        first, last = self.layers[0], self.layers[-1]
        d = self.embed_dim
        if f.shape[-1] != d or t.shape[-1] != d:
            raise ValueError(f"AlignNet expects {d}-d features, got image {tuple(f.shape)} and text {tuple(t.shape)}")
        n_img, n_cls = f.shape[0], t.shape[0]
        img_part = F.linear(f, first.weight[:, :d], first.bias)  # [B, H1]
        cls_part = F.linear(t, first.weight[:, d:])  # [C, H1]
        w_last, b_last = last.weight, last.bias  # [D, H], [D]
        img_dir = f @ w_last  # [B, H]: W^T f
        img_bias = f @ b_last  # [B]
        tb = t + b_last
        cls_sq = (tb * tb).sum(-1)  # [C]
        cls_dir = tb @ w_last  # [C, H]: W^T (t + b)
        gram = w_last.t() @ w_last  # [H, H]
        dots = f @ t.t()  # [B, C]

        mids = list(self.layers[1:-1])

        def chunk(img_part, cls_part, img_dir, img_bias, cls_sq, cls_dir, gram, dots):
            # Without autograd, work in place to halve the temporaries; with it, out of place,
            # as backward needs values that in-place ops would overwrite (both factors of q * h).
            inplace = not torch.is_grad_enabled()
            h = img_part[:, None, :] + cls_part[None, :, :]  # [B, c, H1]
            h = h.relu_() if inplace else F.relu(h)
            for layer in mids:
                h = layer(h).relu_() if inplace else F.relu(layer(h))
            num = dots + torch.bmm(h, img_dir[:, :, None]).squeeze(-1) + img_bias[:, None]
            q = h @ gram  # (W^T W) h, then + 2 W^T (t + b)
            q = q.add_(cls_dir[None, :, :], alpha=2.0) if inplace else q + 2.0 * cls_dir[None, :, :]
            quad = q.mul_(h).sum(-1) if inplace else (q * h).sum(-1)
            return num / _safe_norm(cls_sq + quad)

        widths = [self.layers[0].out_features, *(m.out_features for m in mids)]
        # bytes per (image, class) pair alive at once: the hidden activations and two H-sized temporaries
        per_pair = (sum(widths) + 2 * widths[-1]) * f.element_size()
        step = max(1, min(n_cls, chunk_budget_bytes // max(1, n_img * per_pair)))
        recompute = torch.is_grad_enabled() and step < n_cls
        outs = []
        for start in range(0, n_cls, step):
            cs = slice(start, start + step)
            args = (img_part, cls_part[cs], img_dir, img_bias, cls_sq[cs], cls_dir[cs], gram, dots[:, cs])
            if recompute:
                # nothing random inside: no RNG state to save and restore
                outs.append(checkpoint(chunk, *args, use_reentrant=False, preserve_rng_state=False))
            else:
                outs.append(chunk(*args))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        return scale * out


def naive_alignnet_logits(net: AlignNet, image_features: torch.Tensor, text_features: torch.Tensor,
                          scale) -> torch.Tensor:
    """Direct formula: build every ``[f ; t]`` pair, run the MLP, normalise, dot. O(B*C*D) memory."""
    f = image_features.to(net.layers[0].weight.dtype)
    t = text_features.to(f.dtype)
    n_img, n_cls = f.shape[0], t.shape[0]
    pairs = torch.cat([f[:, None, :].expand(n_img, n_cls, -1), t[None, :, :].expand(n_img, n_cls, -1)], dim=-1)
    adjusted = F.normalize(t[None, :, :] + net(pairs), dim=-1)
    return scale * (f[:, None, :] * adjusted).sum(-1)
