"""LoRA: the config and the low-rank layers (paper 3.2, SPEC section 1).

A LoRA adapter adds ``scaling * B (A x)`` to a frozen linear map ``W x``. A is
Kaiming-uniform and B zero, so a fresh adapter changes nothing. ``scaling`` is
``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from glad.config import ENCODERS, TARGETS  # noqa: F401 - re-exported: where LoRA can go


@dataclass(frozen=True)
class LoraConfig:
    """Where LoRA goes and how it is scaled.

    Args:
        r: rank of every adapter.
        alpha: scale numerator; the update is ``alpha / r * B A`` (``alpha / sqrt(r)`` with rslora).
        dropout: dropout on the adapter input (0 = off).
        targets: which projections of each block get an adapter (subset of ``TARGETS``).
        encoders: ``"image"``, ``"text"`` or both.
        layers: block indices (negative counts from the end) that get adapters in each
            selected encoder; ``None`` means every block.
        rslora: use ``alpha / sqrt(r)`` instead of ``alpha / r``.
    """

    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q", "k", "v")
    encoders: tuple[str, ...] = ("image", "text")
    layers: tuple[int, ...] | None = None
    rslora: bool = False

    def __post_init__(self):
        # Lists from JSON or the CLI become tuples so configs compare and hash by value.
        for name in ("targets", "encoders", "layers"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                if isinstance(value, str):
                    value = (value,)
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"LoRA rank r must be an integer >= 1, got {self.r!r}; e.g. r=8")
        if not (isinstance(self.alpha, int | float) and math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"LoRA alpha must be a finite number > 0, got {self.alpha!r}; e.g. alpha=8.0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        bad = [t for t in self.targets if t not in TARGETS]
        if bad or not self.targets:
            raise ValueError(f"LoRA targets {list(self.targets)!r} invalid; choose a non-empty subset of {TARGETS}")
        bad = [e for e in self.encoders if e not in ENCODERS]
        if bad or not self.encoders:
            raise ValueError(f"LoRA encoders {list(self.encoders)!r} invalid; choose a non-empty subset of {ENCODERS}")
        if self.layers is not None:
            if not self.layers or not all(isinstance(i, int) and not isinstance(i, bool) for i in self.layers):
                raise ValueError(f"LoRA layers must be None (all) or a non-empty list of block indices, got {self.layers!r}")

    @property
    def scaling(self) -> float:
        return self.alpha / math.sqrt(self.r) if self.rslora else self.alpha / self.r

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["targets"] = list(self.targets)
        d["encoders"] = list(self.encoders)
        d["layers"] = None if self.layers is None else list(self.layers)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> LoraConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LoRA setting(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def select_layers(self, n_layers: int) -> list[int]:
        """The block indices (0..n_layers-1) that get adapters in a tower of ``n_layers`` blocks."""
        if self.layers is None:
            return list(range(n_layers))
        chosen = set()
        for i in self.layers:
            j = i + n_layers if i < 0 else i
            if not 0 <= j < n_layers:
                raise ValueError(f"LoRA layer index {i} out of range for a tower of {n_layers} blocks; "
                                 f"use indices in [{-n_layers}, {n_layers - 1}]")
            chosen.add(j)
        return sorted(chosen)


class LoraAdapter(nn.Module):
    """The low-rank update alone: ``delta(x) = scaling * B(A(dropout(x)))``.

    It does not own the frozen weight; the module that does (``LoraLinear`` or a LoRA
    attention) adds ``delta(x)`` to its output and folds ``delta_weight()`` in on merge.
    State: ``merged`` (the update lives in the base weight) and ``disabled`` (switched off).
    """

    def __init__(self, in_features: int, out_features: int, r: int, scaling: float, dropout: float = 0.0,
                 *, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features, self.r, self.scaling = in_features, out_features, r, scaling
        self.lora_A = nn.Linear(in_features, r, bias=False, device=device, dtype=dtype)
        self.lora_B = nn.Linear(r, out_features, bias=False, device=device, dtype=dtype)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.disabled = False
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        # A as nn.Linear's own default init (Kaiming-uniform), B zero: the update starts at 0.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    @property
    def active(self) -> bool:
        """True when ``delta`` must be added at run time (not merged, not disabled)."""
        return not (self.merged or self.disabled)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    @torch.no_grad()
    def delta_weight(self) -> torch.Tensor:
        """``scaling * B @ A`` in float32 (what merging adds to the base weight)."""
        return (self.lora_B.weight.float() @ self.lora_A.weight.float()) * self.scaling

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, scaling={self.scaling:g}"


def _fold(weight: torch.Tensor, delta: torch.Tensor, sign: float) -> None:
    # Accumulate in float32 whatever the weight dtype, then write back in place
    # (in place keeps the Parameter object, so optimizers and views stay valid).
    weight.copy_((weight.float() + sign * delta).to(weight.dtype))


class LoraLinear(LoraAdapter):
    """A frozen ``nn.Linear`` plus an adapter; keeps the base parameter names ``weight``/``bias``.

    The base parameters are the original Linear's (not copies), so the model's base
    state-dict keys do not change when LoRA is injected.
    """

    def __init__(self, base: nn.Linear, r: int, scaling: float, dropout: float = 0.0):
        super().__init__(base.in_features, base.out_features, r, scaling, dropout,
                         device=base.weight.device, dtype=base.weight.dtype)
        self.weight = base.weight
        self.bias = base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.active:
            y = y + self.delta(x)
        return y

    def effective_weight(self) -> torch.Tensor:
        """The weight the layer applies, differentiable in the adapter: ``W + scaling * B A``
        while active, else ``W`` itself. For modules that read their projections' weights
        instead of calling them (a fresh adapter adds an exact zero)."""
        if not self.active:
            return self.weight
        return self.weight + (self.lora_B.weight @ self.lora_A.weight).to(self.weight.dtype) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            _fold(self.weight, self.delta_weight(), +1.0)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            _fold(self.weight, self.delta_weight(), -1.0)
            self.merged = False


class SlicedAdapters(nn.Module):
    """A frozen weight whose rows are several projections (q/k/v packed), one adapter per
    slice. Subclasses say where the slices are (`sliced_adapters`); merging is shared."""

    def sliced_adapters(self) -> list[tuple[LoraAdapter | None, torch.Tensor]]:
        """(adapter or None, the weight rows it updates) for each projection."""
        raise NotImplementedError

    @torch.no_grad()
    def merge_slices(self) -> None:
        for adapter, rows in self.sliced_adapters():
            if adapter is not None and not adapter.merged:
                _fold(rows, adapter.delta_weight(), +1.0)
                adapter.merged = True

    @torch.no_grad()
    def unmerge_slices(self) -> None:
        for adapter, rows in self.sliced_adapters():
            if adapter is not None and adapter.merged:
                _fold(rows, adapter.delta_weight(), -1.0)
                adapter.merged = False


class LoraPackedLinear(SlicedAdapters):
    """A frozen ``nn.Linear`` whose output rows are several projections (timm's fused ``qkv``,
    a latent pool's ``kv``), with an adapter on each targeted slice.

    Keeps the base parameter names ``weight``/``bias`` (state-dict keys unchanged). The
    packed product runs as one GEMM exactly as before; adapters add to their slices only,
    so with every B = 0 the output equals the original layer's bit for bit.
    """

    def __init__(self, base: nn.Linear, parts: Sequence[str], config: LoraConfig):
        super().__init__()
        n = len(parts)
        if base.out_features % n:
            raise ValueError(f"a packed projection of {base.out_features} rows cannot hold {n} equal parts")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        size = base.out_features // n
        self.parts = tuple(parts)
        self.rows = tuple(slice(i * size, (i + 1) * size) for i in range(n))
        kw = dict(device=base.weight.device, dtype=base.weight.dtype)
        for part in parts:
            adapter = (LoraAdapter(base.in_features, size, config.r, config.scaling, config.dropout, **kw)
                       if part in config.targets else None)
            setattr(self, f"{part}_proj", adapter)

    def sliced_adapters(self):
        return [(getattr(self, f"{p}_proj"), self.weight[rows]) for p, rows in zip(self.parts, self.rows, strict=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        adapters = [getattr(self, f"{p}_proj") for p in self.parts]
        if not any(a is not None and a.active for a in adapters):
            return y
        return torch.cat([y[..., rows] + a.delta(x) if a is not None and a.active else y[..., rows]
                          for a, rows in zip(adapters, self.rows, strict=True)], dim=-1)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, parts={'/'.join(self.parts)}"
