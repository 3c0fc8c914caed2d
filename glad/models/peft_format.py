"""glad's LoRA as a PEFT LoRA adapter of the plain open_clip model, and back.

PEFT adapts the modules open_clip builds: ``nn.MultiheadAttention`` as one LoRA on the
packed q/k/v ``in_proj`` (plus one on its ``out_proj``), and ``nn.Linear`` layers (timm's
fused ``qkv``, separate ``q_proj``...). glad keeps one rank-r adapter per projection. Those
are exactly one packed adapter of rank ``n * r`` on the module PEFT adapts:

    A = cat(A_q, A_k, A_v)            [n*r, in]
    B = block_diag(B_q, B_k, B_v)     [out, n*r]   (each block on its projection's rows)
    lora_alpha = scaling * n * r      (PEFT's scaling lora_alpha / rank equals glad's)

so ``B A * scaling`` is glad's update, row for row. Blocks glad has no adapter for are zero
(an MHA ``out_proj`` without an "out" adapter: A = B = 0). Reading back takes the blocks out
again and refuses a folder whose off-block entries are not zero (PEFT-trained further).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn as nn

from glad.models.attention import LoraAttention, LoraAttentionPool2d, LoraMultiheadAttention
from glad.models.lora import LoraAdapter, LoraLinear, LoraPackedLinear

PREFIX = "base_model.model."
_MHA_OUT = ".base_layer.out_proj"  # where PEFT's MultiheadAttention LoRA keeps the out_proj adapter


class PeftExportError(ValueError):
    """This model's adapters have no exact PEFT equivalent."""


@dataclass(frozen=True)
class Piece:
    """One glad adapter inside one packed PEFT adapter."""

    glad: str     # glad's adapter module path (its lora_A/lora_B live under it)
    key: str      # PEFT's module path for the packed lora_A/lora_B (without PREFIX)
    target: str   # the open_clip module PEFT adapts (an MHA or a Linear)
    rows: slice   # rows of that module's weight the adapter updates
    block: int    # which r-column block of the packed adapter it occupies


@dataclass(frozen=True)
class Packed:
    key: str
    target: str
    rank: int
    shape: tuple[int, int]  # (out, in) of the weight it updates


def layout(clip: nn.Module) -> tuple[list[Piece], dict[str, Packed]]:
    """Where each of glad's adapters goes in PEFT's packed adapters, and those adapters.

    Raises PeftExportError (one line) for a model PEFT's LoRA cannot express exactly.
    """
    pieces: list[Piece] = []
    owned: set[str] = set()  # out_proj adapters an MHA accounts for
    shapes: dict[str, tuple[str, tuple[int, int]]] = {}
    for name, m in clip.named_modules():
        if isinstance(m, LoraAttentionPool2d):
            raise PeftExportError(f"{name} is a ResNet attention pool, which reads its weights without calling its "
                                  "Linears, so a PEFT LoRA on them would do nothing; use --format open_clip")
        if isinstance(m, LoraAttention):
            raise PeftExportError(f"{name} is open_clip's custom Attention, which PEFT has no LoRA layer for; "
                                  "use --format open_clip")
        if isinstance(m, LoraMultiheadAttention):
            if m.in_proj_weight is None:
                raise PeftExportError(f"{name} takes keys/values of another width (separate q/k/v weights), which "
                                      "PEFT's MultiheadAttention LoRA does not support; use --format open_clip")
            d = m.embed_dim
            adapters = [(a, rows) for a, rows in zip((m.q_proj, m.k_proj, m.v_proj), m._rows(), strict=True)]
            present = [(p, a, rows) for p, (a, rows) in zip(("q_proj", "k_proj", "v_proj"), adapters, strict=True)
                       if a is not None]
            for block, (p, _, rows) in enumerate(present):
                pieces.append(Piece(f"{name}.{p}", name, name, rows, block))
            shapes[name] = (name, (3 * d, d))
            shapes[name + _MHA_OUT] = (name, (m.out_proj.out_features, m.out_proj.in_features))
            if isinstance(m.out_proj, LoraLinear):
                pieces.append(Piece(f"{name}.out_proj", name + _MHA_OUT, name, slice(None), 0))
            owned.add(f"{name}.out_proj")
        elif isinstance(m, LoraPackedLinear):
            parent = clip.get_submodule(name.rpartition(".")[0]) if "." in name else clip
            if getattr(parent, "q_bias", None) is not None:
                raise PeftExportError(f"{name} belongs to an EVA attention with a separate q/v bias, which open_clip "
                                      "runs without calling the qkv Linear (a PEFT LoRA on it would do nothing); "
                                      "use --format open_clip")
            present = [(p, rows) for p, rows in zip(m.parts, m.rows, strict=True)
                       if getattr(m, f"{p}_proj") is not None]
            for block, (p, rows) in enumerate(present):
                pieces.append(Piece(f"{name}.{p}_proj", name, name, rows, block))
            shapes[name] = (name, (m.out_features, m.in_features))
        elif isinstance(m, LoraLinear) and name not in owned:
            pieces.append(Piece(name, name, name, slice(None), 0))
            shapes[name] = (name, (m.out_features, m.in_features))
    if not pieces:
        raise PeftExportError("this model carries no LoRA adapters: there is nothing to export for PEFT")
    r = _rank(clip)
    blocks: dict[str, int] = {}
    for p in pieces:  # an MHA's in_proj and out_proj share one rank in PEFT
        blocks[p.target] = max(blocks.get(p.target, 0), p.block + 1)
    packed = {key: Packed(key, target, r * blocks[target], shape) for key, (target, shape) in shapes.items()}
    return pieces, packed


def _rank(clip: nn.Module) -> int:
    ranks = {m.r for m in clip.modules() if isinstance(m, LoraAdapter)}
    if len(ranks) != 1:
        raise PeftExportError(f"adapters of several ranks {sorted(ranks)}; glad writes one rank per model")
    return ranks.pop()


def _scaling(clip: nn.Module) -> float:
    return next(m.scaling for m in clip.modules() if isinstance(m, LoraAdapter))


def peft_config(clip: nn.Module, base_model: str) -> dict:
    """The LoraConfig fields (for ``peft.LoraConfig(**fields)``) of the packed adapter."""
    _, packed = layout(clip)
    scaling = _scaling(clip)
    targets = sorted({p.target: p.rank for p in packed.values()}.items())
    ranks = [rank for _, rank in targets]
    r = max(set(ranks), key=ranks.count)
    # full, anchored names: "transformer.resblocks.0.attn" must not also match the image tower's
    rank_pattern = {f"^{re.escape(t)}": rank for t, rank in targets if rank != r}
    return {
        "r": r,
        "lora_alpha": scaling * r,
        "rank_pattern": rank_pattern,
        "alpha_pattern": {k: scaling * rank for k, rank in rank_pattern.items()},
        "target_modules": "^(?:" + "|".join(re.escape(t) for t, _ in targets) + ")$",
        "lora_dropout": 0.0,
        "bias": "none",
        "base_model_name_or_path": base_model,
    }


def to_peft(clip: nn.Module) -> dict[str, torch.Tensor]:
    """PEFT's adapter tensors (``adapter_model.safetensors`` keys) for glad's adapters, float32."""
    pieces, packed = layout(clip)
    tensors = {}
    for p in packed.values():
        out, inp = p.shape
        tensors[f"{PREFIX}{p.key}.lora_A.weight"] = torch.zeros(p.rank, inp)
        tensors[f"{PREFIX}{p.key}.lora_B.weight"] = torch.zeros(out, p.rank)
    for piece in pieces:
        adapter = clip.get_submodule(piece.glad)
        r = adapter.r
        cols = slice(piece.block * r, (piece.block + 1) * r)
        tensors[f"{PREFIX}{piece.key}.lora_A.weight"][cols] = adapter.lora_A.weight.detach().float().cpu()
        tensors[f"{PREFIX}{piece.key}.lora_B.weight"][piece.rows, cols] = adapter.lora_B.weight.detach().float().cpu()
    return tensors


def from_peft(clip: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """glad's adapter tensors (``<module>.lora_{A,B}.weight``) from PEFT's packed ones.

    Refuses (one line) when a key or shape differs, or when entries outside glad's blocks are
    not zero: such an adapter has no exact rank-r-per-projection form."""
    pieces, packed = layout(clip)
    expected = {f"{PREFIX}{p.key}.lora_{ab}.weight" for p in packed.values() for ab in "AB"}
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ValueError(f"{source} does not fit this model's adapters: missing {missing[:3]}, unexpected "
                         f"{extra[:3]}; pass the folder glad export --format peft wrote for this adapter")
    rest = {k: v.float().clone() for k, v in tensors.items()}
    out = {}
    for piece in pieces:
        r = clip.get_submodule(piece.glad).r
        cols = slice(piece.block * r, (piece.block + 1) * r)
        a, b = f"{PREFIX}{piece.key}.lora_A.weight", f"{PREFIX}{piece.key}.lora_B.weight"
        if rest[a].shape[1] != clip.get_submodule(piece.glad).lora_A.weight.shape[1]:
            raise ValueError(f"{source}: {a} has shape {tuple(rest[a].shape)}, which does not fit this model")
        out[f"{piece.glad}.lora_A.weight"] = rest[a][cols].clone()
        out[f"{piece.glad}.lora_B.weight"] = rest[b][piece.rows, cols].clone()
        rest[b][piece.rows, cols] = 0
    for p in packed.values():  # A blocks of absent adapters may hold anything only if their B is 0
        b = rest[f"{PREFIX}{p.key}.lora_B.weight"]
        if b.count_nonzero():
            raise ValueError(f"{source}: {PREFIX}{p.key}.lora_B.weight is nonzero outside glad's per-projection "
                             "blocks (an adapter trained further as one packed LoRA); load it with PEFT instead")
    return out
