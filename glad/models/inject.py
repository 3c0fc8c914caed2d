"""Put LoRA into an open_clip CLIP, merge it, unmerge it, switch it off.

Only ViT-style open_clip towers are touched: the blocks of ``model.visual.transformer``
(image) and of ``model.transformer`` / ``model.text.transformer`` (text).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch.nn as nn

from glad.models.attention import _LoraQKVBase, lora_attention_from
from glad.models.lora import LoraAdapter, LoraConfig, LoraLinear

_CONFIG_ATTR = "_glad_lora_config"
_ATTN_TARGETS = ("q", "k", "v", "out")


def encoder_blocks(model: nn.Module) -> dict[str, tuple[str, nn.ModuleList]]:
    """``{"image": (path, blocks), "text": (path, blocks)}`` for the towers this model has."""
    candidates = {"image": ("visual.transformer",), "text": ("transformer", "text.transformer")}
    found = {}
    for encoder, paths in candidates.items():
        for path in paths:
            module = model
            for part in path.split("."):
                module = getattr(module, part, None)
            blocks = getattr(module, "resblocks", None)
            if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
                found[encoder] = (path + ".resblocks", blocks)
                break
    return found


def _describe_towers(model: nn.Module) -> str:
    visual = getattr(model, "visual", None)
    text = getattr(model, "text", getattr(model, "transformer", None))
    return (f"image tower: {type(visual).__name__ if visual is not None else 'none'}, "
            f"text tower: {type(text).__name__ if text is not None else 'none'}")


def inject_lora(model: nn.Module, config: LoraConfig) -> nn.Module:
    """Add LoRA adapters to ``model`` in place and freeze everything else.

    Each selected attention module is replaced by an equivalent one with adapters on
    the configured q/k/v/out projections (MLP linears become ``LoraLinear`` when
    targeted). Afterwards only adapter parameters have ``requires_grad=True``.
    Returns ``model``.
    """
    if not isinstance(config, LoraConfig):
        raise TypeError(f"config must be a LoraConfig, got {type(config).__name__}")
    if lora_config(model) is not None or any(isinstance(m, LoraAdapter) for m in model.modules()):
        raise ValueError("this model already carries LoRA adapters; inject LoRA once per model "
                         "(load a fresh model to change the LoRA config)")
    towers = encoder_blocks(model)
    for encoder in config.encoders:
        if encoder not in towers:
            raise ValueError(f"LoRA for the {encoder} encoder needs an open_clip ViT-style transformer tower, "
                             f"but this model has none ({_describe_towers(model)}); "
                             f"drop {encoder!r} from LoraConfig.encoders")
    attn_targets = [t for t in config.targets if t in _ATTN_TARGETS]
    for encoder in config.encoders:
        _, blocks = towers[encoder]
        for i in config.select_layers(len(blocks)):
            block = blocks[i]
            if attn_targets:
                block.attn = lora_attention_from(block.attn, config)
            for target, name in (("mlp_fc", "c_fc"), ("mlp_proj", "c_proj")):
                if target in config.targets:
                    linear = getattr(block.mlp, name)
                    if not isinstance(linear, nn.Linear):
                        raise TypeError(f"LoRA target {target!r} expects mlp.{name} to be nn.Linear, "
                                        f"got {type(linear).__name__}")
                    setattr(block.mlp, name, LoraLinear(linear, config.r, config.scaling, config.dropout))
    for p in model.parameters():
        p.requires_grad_(False)
    for p in lora_parameters(model):
        p.requires_grad_(True)
    setattr(model, _CONFIG_ATTR, config)
    return model


def lora_config(model: nn.Module) -> LoraConfig | None:
    """The LoraConfig a model was injected with, or None."""
    return getattr(model, _CONFIG_ATTR, None)


def lora_adapters(model: nn.Module) -> Iterator[LoraAdapter]:
    return (m for m in model.modules() if isinstance(m, LoraAdapter))


def lora_named_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every adapter matrix, in module order."""
    return [(n, p) for n, p in model.named_parameters()
            if n.endswith(("lora_A.weight", "lora_B.weight"))]


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for _, p in lora_named_parameters(model)]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (inference then runs at plain-CLIP speed)."""
    if any(a.disabled for a in lora_adapters(model)):
        raise RuntimeError("cannot merge LoRA while adapters are disabled (inside adapters_disabled)")
    for m in model.modules():
        if isinstance(m, _LoraQKVBase):
            m.merge_qkv()
        elif isinstance(m, LoraLinear):
            m.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Take every merged adapter back out of its base weight (exact up to float rounding)."""
    for m in model.modules():
        if isinstance(m, _LoraQKVBase):
            m.unmerge_qkv()
        elif isinstance(m, LoraLinear):
            m.unmerge()
    return model


def is_merged(model: nn.Module) -> bool:
    return any(a.merged for a in lora_adapters(model))


def switchable_modules(model: nn.Module) -> list[nn.Module]:
    """Every module `adapters_disabled` switches: LoRA adapters, then parts that declare
    `switchable = True` (AlignNet). One walk of the model; callers may keep the list."""
    adapters = list(lora_adapters(model))
    nets = [m for m in model.modules() if getattr(m, "switchable", False) and not isinstance(m, LoraAdapter)]
    return adapters + nets


@contextlib.contextmanager
def adapters_disabled(model: nn.Module, switchable: list[nn.Module] | None = None):
    """Switch every LoRA adapter and AlignNet off: the frozen zero-shot model, no copy made.

    Merged adapters are taken out of the weights for the duration and put back after.
    Nests; restores the previous state on exit, also on error. `switchable` is
    `switchable_modules(model)` kept by the caller: without it the model is walked (570
    modules for ViT-B-16, milliseconds of host time) on every entry.
    """
    modules = switchable_modules(model) if switchable is None else switchable
    was_merged = any(m.merged for m in modules if isinstance(m, LoraAdapter))
    if was_merged:
        unmerge_lora(model)
    previous = [(m, m.disabled) for m in modules]
    # A plain attribute, so set it directly: nn.Module.__setattr__ costs microseconds per call.
    for m in modules:
        vars(m)["disabled"] = True
    try:
        yield model
    finally:
        for m, state in previous:
            vars(m)["disabled"] = state
        if was_merged:
            merge_lora(model)
