"""Attention modules whose q/k/v/out projections carry LoRA adapters.

open_clip packs q, k and v into one ``in_proj_weight`` (``nn.MultiheadAttention`` in
its default blocks, ``open_clip.transformer.Attention`` in its custom blocks). The
modules here take over the original parameters (no copy, same state-dict names) and
compute the same attention, with a separate low-rank adapter on each of q, k, v and
on the output projection. With every adapter at B = 0 they reproduce the original
module to float rounding; merged, they run the original packed projection alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from glad.models.lora import LoraAdapter, LoraConfig, LoraLinear, fold_into


def _additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    # Boolean masks mark positions to hide (PyTorch's convention); make them additive.
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    return mask.to(dtype)


class _LoraQKVBase(nn.Module):
    """Holds the packed q/k/v weight, the per-projection adapters and the output projection."""

    def __init__(self, in_proj_weight: nn.Parameter, in_proj_bias: nn.Parameter | None,
                 out_proj: nn.Linear, num_heads: int, config: LoraConfig):
        super().__init__()
        dim = in_proj_weight.shape[1]
        if in_proj_weight.shape[0] != 3 * dim or dim % num_heads:
            raise ValueError(f"expected a packed [3*D, D] q/k/v weight with D divisible by {num_heads} heads, "
                             f"got shape {tuple(in_proj_weight.shape)}")
        self.embed_dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.in_proj_weight = in_proj_weight
        self.in_proj_bias = in_proj_bias
        kw = dict(device=in_proj_weight.device, dtype=in_proj_weight.dtype)

        def adapter(name):
            if name not in config.targets:
                return None
            return LoraAdapter(dim, dim, config.r, config.scaling, config.dropout, **kw)

        self.q_proj, self.k_proj, self.v_proj = adapter("q"), adapter("k"), adapter("v")
        self.out_proj = (LoraLinear(out_proj, config.r, config.scaling, config.dropout)
                         if "out" in config.targets else out_proj)

    def _qkv_adapters(self):
        d = self.embed_dim
        return [(self.q_proj, slice(0, d)), (self.k_proj, slice(d, 2 * d)), (self.v_proj, slice(2 * d, 3 * d))]

    def _project(self, query, key, value, self_attention: bool):
        if self_attention:
            # One packed GEMM, exactly as the original module does it.
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            w, b = self.in_proj_weight, self.in_proj_bias
            q, k, v = (F.linear(x, w[rows], None if b is None else b[rows])
                       for x, (_, rows) in zip((query, key, value), self._qkv_adapters(), strict=True))
        inputs = (query, key, value)
        out = [q, k, v]
        for i, (adapter, _) in enumerate(self._qkv_adapters()):
            if adapter is not None and adapter.active:
                out[i] = out[i] + adapter.delta(inputs[i])
        return out

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        return x.view(n, length, self.num_heads, self.head_dim).transpose(1, 2)

    # merge_lora / unmerge_lora call these; out_proj (a LoraLinear) merges itself.
    @torch.no_grad()
    def merge_qkv(self) -> None:
        todo = [(a, rows) for a, rows in self._qkv_adapters() if a is not None and not a.merged]
        fold_into(self.in_proj_weight, todo, +1.0)
        for a, _ in todo:
            a.merged = True

    @torch.no_grad()
    def unmerge_qkv(self) -> None:
        todo = [(a, rows) for a, rows in self._qkv_adapters() if a is not None and a.merged]
        fold_into(self.in_proj_weight, todo, -1.0)
        for a, _ in todo:
            a.merged = False


class LoraMultiheadAttention(_LoraQKVBase):
    """Drop-in for ``nn.MultiheadAttention`` (same call signature and outputs), with LoRA.

    Supports batch_first True or False, 2-D ``[L, S]`` or 3-D ``[N*heads, L, S]`` masks
    (bool or additive), ``key_padding_mask`` and ``need_weights``.
    """

    def __init__(self, mha: nn.MultiheadAttention, config: LoraConfig):
        if not mha._qkv_same_embed_dim:
            raise ValueError("LoRA attention needs a packed in_proj_weight (kdim == vdim == embed_dim); "
                             f"this MultiheadAttention has kdim={mha.kdim}, vdim={mha.vdim}, embed_dim={mha.embed_dim}")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("LoRA attention does not support add_bias_kv / add_zero_attn "
                             "(no open_clip CLIP uses them)")
        super().__init__(mha.in_proj_weight, mha.in_proj_bias, mha.out_proj, mha.num_heads, config)
        self.batch_first = mha.batch_first
        self.dropout = mha.dropout

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if query.dim() != 3:
            raise ValueError(f"expected batched 3-D inputs, got query of shape {tuple(query.shape)}")
        self_attention = key is query and value is query
        if not self.batch_first:  # [L, N, E] -> [N, L, E]
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        q, k, v = self._project(query, key, value, self_attention)
        n, length, _ = q.shape
        src = k.shape[1]
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)

        mask = _additive_mask(attn_mask, q.dtype)
        if mask is not None:
            mask = mask.view(n, self.num_heads, length, src) if mask.dim() == 3 else mask.view(1, 1, length, src)
        pad = _additive_mask(key_padding_mask, q.dtype)
        if pad is not None:
            pad = pad.view(n, 1, 1, src)
            mask = pad if mask is None else mask + pad
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            elif is_causal:
                scores = scores.masked_fill(torch.ones(length, src, dtype=torch.bool, device=q.device).triu(1),
                                            float("-inf"))
            probs = scores.softmax(dim=-1)
            weights = probs.mean(dim=1) if average_attn_weights else probs
            x = F.dropout(probs, dropout_p) @ v
        else:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                               is_causal=is_causal and mask is None)
        x = self.out_proj(x.transpose(1, 2).reshape(n, length, self.embed_dim))
        if not self.batch_first:
            x = x.transpose(0, 1)
        return x, weights


class LoraAttention(_LoraQKVBase):
    """Drop-in for ``open_clip.transformer.Attention`` (custom blocks), with LoRA.

    Keeps the original's optional parts (qk-norm, scaled-cosine attention, per-head
    scale, inner norm) as the same submodules, so state-dict names do not change.
    """

    def __init__(self, attn: nn.Module, config: LoraConfig):
        super().__init__(attn.in_proj_weight, attn.in_proj_bias, attn.out_proj, attn.num_heads, config)
        self.scaled_cosine = attn.scaled_cosine
        self.scale = attn.scale
        self.logit_scale_max = attn.logit_scale_max
        self.logit_scale = attn.logit_scale
        self.head_scale = attn.head_scale
        self.ln_q, self.ln_k, self.ln_inner = attn.ln_q, attn.ln_k, attn.ln_inner
        self.attn_drop, self.out_drop = attn.attn_drop, attn.out_drop

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        n, length, dim = x.shape
        q, k, v = (self._split_heads(t) for t in self._project(x, x, x, True))
        if attn_mask is not None:
            if attn_mask.ndim == 3:  # [N*heads, L, L] -> [N, heads, L, L]
                attn_mask = attn_mask.reshape(n, self.num_heads, length, length)
            attn_mask = _additive_mask(attn_mask, q.dtype)

        if self.logit_scale is not None:
            attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)
            attn = attn * torch.clamp(self.logit_scale, max=self.logit_scale_max).exp()
            if attn_mask is not None:
                attn = attn + attn_mask
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        else:
            q, k = self.ln_q(q), self.ln_k(k)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                               dropout_p=self.attn_drop.p if self.training else 0.0)
        if self.head_scale is not None:
            x = x * self.head_scale
        x = self.ln_inner(x.transpose(1, 2).reshape(n, length, dim))
        return self.out_drop(self.out_proj(x))


def lora_attention_from(attn: nn.Module, config: LoraConfig) -> nn.Module:
    """The LoRA replacement for one open_clip attention module (takes over its parameters)."""
    if isinstance(attn, (LoraMultiheadAttention, LoraAttention)):
        raise ValueError("this attention already carries LoRA adapters; inject LoRA only once per model")
    if isinstance(attn, nn.MultiheadAttention):
        return LoraMultiheadAttention(attn, config)
    try:
        from open_clip.transformer import Attention
    except ImportError:  # pragma: no cover - open_clip is a dependency
        Attention = ()
    if Attention and isinstance(attn, Attention):
        return LoraAttention(attn, config)
    raise TypeError(f"cannot add LoRA to attention of type {type(attn).__name__}; expected "
                    "nn.MultiheadAttention or open_clip.transformer.Attention")
