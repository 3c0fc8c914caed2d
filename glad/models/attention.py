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

from glad.models.lora import LoraAdapter, LoraConfig, LoraLinear, SlicedAdapters


def _additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    # Boolean masks mark positions to hide (PyTorch's convention); make them additive.
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    return mask.to(dtype)


class _LoraQKVBase(SlicedAdapters):
    """Holds the q/k/v weights (packed ``in_proj_weight``, or three separate ones when keys
    and values have another width), the per-projection adapters and the output projection."""

    def __init__(self, in_proj_weight: nn.Parameter | None, in_proj_bias: nn.Parameter | None,
                 out_proj: nn.Linear, num_heads: int, config: LoraConfig,
                 separate: tuple[nn.Parameter, nn.Parameter, nn.Parameter] | None = None):
        super().__init__()
        if separate is None:
            dim = in_proj_weight.shape[1]
            if in_proj_weight.shape[0] != 3 * dim or dim % num_heads:
                raise ValueError(f"expected a packed [3*D, D] q/k/v weight with D divisible by {num_heads} heads, "
                                 f"got shape {tuple(in_proj_weight.shape)}")
            in_dims = (dim, dim, dim)
            self.in_proj_weight = in_proj_weight
        else:
            dim = separate[0].shape[0]
            in_dims = tuple(w.shape[1] for w in separate)
            self.in_proj_weight = None
            self.q_proj_weight, self.k_proj_weight, self.v_proj_weight = separate
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.embed_dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.in_proj_bias = in_proj_bias
        ref = in_proj_weight if separate is None else separate[0]
        kw = dict(device=ref.device, dtype=ref.dtype)

        def adapter(name, in_dim):
            if name not in config.targets:
                return None
            return LoraAdapter(in_dim, dim, config.r, config.scaling, config.dropout, **kw)

        self.q_proj, self.k_proj, self.v_proj = (adapter(n, d) for n, d in zip("qkv", in_dims, strict=True))
        self.out_proj = (LoraLinear(out_proj, config.r, config.scaling, config.dropout)
                         if "out" in config.targets else out_proj)

    def _rows(self) -> list[slice]:
        d = self.embed_dim
        return [slice(0, d), slice(d, 2 * d), slice(2 * d, 3 * d)]

    def _weights(self) -> list[torch.Tensor]:
        if self.in_proj_weight is None:
            return [self.q_proj_weight, self.k_proj_weight, self.v_proj_weight]
        return [self.in_proj_weight[rows] for rows in self._rows()]

    def sliced_adapters(self):
        return list(zip((self.q_proj, self.k_proj, self.v_proj), self._weights(), strict=True))

    def _project(self, query, key, value, self_attention: bool):
        b = self.in_proj_bias
        if self_attention and self.in_proj_weight is not None:
            # One packed GEMM, exactly as the original module does it.
            q, k, v = F.linear(query, self.in_proj_weight, b).chunk(3, dim=-1)
        else:
            q, k, v = (F.linear(x, w, None if b is None else b[rows])
                       for x, w, rows in zip((query, key, value), self._weights(), self._rows(), strict=True))
        inputs = (query, key, value)
        out = [q, k, v]
        for i, adapter in enumerate((self.q_proj, self.k_proj, self.v_proj)):
            if adapter is not None and adapter.active:
                out[i] = out[i] + adapter.delta(inputs[i])
        return out

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        return x.view(n, length, self.num_heads, self.head_dim).transpose(1, 2)


class LoraMultiheadAttention(_LoraQKVBase):
    """Drop-in for ``nn.MultiheadAttention`` (same call signature and outputs), with LoRA.

    Supports batch_first True or False, 2-D ``[L, S]`` or 3-D ``[N*heads, L, S]`` masks
    (bool or additive), ``key_padding_mask``, ``need_weights``, and keys/values of another
    width than the queries (separate projection weights, as in CoCa's attentional pooler).
    """

    def __init__(self, mha: nn.MultiheadAttention, config: LoraConfig):
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("LoRA attention does not support add_bias_kv / add_zero_attn "
                             "(no open_clip CLIP uses them)")
        separate = None if mha._qkv_same_embed_dim else (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        super().__init__(mha.in_proj_weight, mha.in_proj_bias, mha.out_proj, mha.num_heads, config, separate)
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


class LoraAttentionPool2d(nn.Module):
    """Drop-in for open_clip's ResNet attention pool (``AttentionPool2d``), with LoRA.

    That module reads its projections' weights rather than calling them, so the adapters act
    in weight space here (``W + scaling * B A``, an exact zero while B = 0): one pooling
    query over 50 tokens, where the extra [D, D] products cost nothing that matters.
    """

    def __init__(self, pool: nn.Module, config: LoraConfig):
        super().__init__()
        if config.dropout > 0:
            raise ValueError("LoRA dropout cannot act on a ResNet attention pool (its adapters work on the "
                             "weights); set --lora-dropout 0 for this model")
        self.positional_embedding = pool.positional_embedding
        self.num_heads = pool.num_heads
        for target, name in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("out", "c_proj")):
            linear = getattr(pool, name)
            setattr(self, name, LoraLinear(linear, config.r, config.scaling) if target in config.targets else linear)

    @staticmethod
    def _weight(linear: nn.Linear) -> torch.Tensor:
        return linear.effective_weight() if isinstance(linear, LoraLinear) else linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3]).permute(2, 0, 1)  # NCHW -> (HW)NC
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        x, _ = F.multi_head_attention_forward(
            query=x, key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self._weight(self.q_proj), k_proj_weight=self._weight(self.k_proj),
            v_proj_weight=self._weight(self.v_proj), in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=self._weight(self.c_proj), out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True, training=self.training, need_weights=False)
        return x[0]


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
