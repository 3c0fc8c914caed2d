"""Put LoRA into an open_clip CLIP, merge it, unmerge it, switch it off.

LoRA goes into q, k and v (and, when asked, the output projection and the MLP) of every
attention layer of the image tower (``model.visual``) and the text tower (``model.text``
for CustomTextCLIP, ``model.transformer`` for CLIP), whatever the family builds them from:

* open_clip's ``nn.MultiheadAttention`` / ``Attention`` (ViT, text transformers, CoCa's pooler);
* a fused ``qkv`` Linear (timm ViTs: SigLIP/SigLIP2, PE-Core, EVA, ViTamin, FastViT/MobileCLIP,
  Swin) and a latent pool's ``q`` + fused ``kv`` (SigLIP's attention-pool head);
* separate ``q_proj/k_proj/v_proj``, ``query/key/value`` or ``q/k/v`` Linears (EVA, Hugging
  Face text towers: RoBERTa/XLM-R, MT5, NLLB);
* the ResNet attention pool (RN50 and friends).

Injection is all or nothing: every tower is planned first, and a refusal changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch.nn as nn

from glad.models.attention import LoraAttentionPool2d, lora_attention_from
from glad.models.lora import (
    ENCODERS,
    LoraAdapter,
    LoraConfig,
    LoraLinear,
    LoraPackedLinear,
    SlicedAdapters,
)

_CONFIG_ATTR = "_glad_lora_config"
_SITES_ATTR = "_glad_lora_sites"
_SEPARATE = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"), ("q", "k", "v"))
_OUT_NAMES = ("proj", "out_proj", "c_proj", "o")
_MLP_NAMES = {"mlp_fc": ("c_fc", "fc1"), "mlp_proj": ("c_proj", "fc2")}


def encoder_tower(model: nn.Module, encoder: str) -> nn.Module | None:
    """The module that holds one tower's attention layers (``"image"`` or ``"text"``)."""
    if encoder == "image":
        return getattr(model, "visual", None)
    if encoder == "text":
        text = getattr(model, "text", None)
        return text if isinstance(text, nn.Module) else getattr(model, "transformer", None)
    raise ValueError(f"unknown encoder {encoder!r}; choose from {ENCODERS}")


def _attention_kind(module: nn.Module) -> str | tuple[str, ...] | None:
    """How `module` holds its q/k/v projections, or None when it is no attention layer."""
    from open_clip.modified_resnet import AttentionPool2d
    from open_clip.transformer import Attention

    if isinstance(module, (nn.MultiheadAttention, Attention)):
        return "replace"
    if isinstance(module, AttentionPool2d):
        return "pool2d"
    children = dict(module.named_children())
    if isinstance(children.get("qkv"), nn.Linear):
        return "packed"
    if isinstance(children.get("kv"), nn.Linear) and "q" in children:
        return "latent"
    for names in _SEPARATE:
        if all(isinstance(children.get(n), nn.Linear) for n in names):
            return names
    return None


def attention_sites(tower: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name within `tower`, module) of every attention layer, in module order (nested
    attention inside one already found is part of it)."""
    sites: list[tuple[str, nn.Module]] = []
    for name, module in tower.named_modules():
        if sites and any(name.startswith(prefix + ".") for prefix, _ in sites):
            continue
        if _attention_kind(module) is not None:
            sites.append((name, module))
    return sites


def _linear_child(module: nn.Module, names) -> tuple[str, nn.Linear] | None:
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Linear):
            return name, child
    return None


def _wrap(parent: nn.Module, name: str, config: LoraConfig) -> Callable[[], None]:
    linear = getattr(parent, name)
    return lambda: setattr(parent, name, LoraLinear(linear, config.r, config.scaling, config.dropout))


def _plan_site(tower: nn.Module, name: str, module: nn.Module, config: LoraConfig) -> list[Callable[[], None]]:
    """The edits that put `config`'s adapters into one attention layer (nothing changed yet)."""
    parent_name, _, attr = name.rpartition(".")
    parent = tower.get_submodule(parent_name) if parent_name else tower
    kind = _attention_kind(module)
    targets = set(config.targets)
    edits: list[Callable[[], None]] = []
    if kind == "replace":
        edits.append(lambda: setattr(parent, attr, lora_attention_from(module, config)))
    elif kind == "pool2d":
        if "mlp_fc" in targets or "mlp_proj" in targets:
            raise ValueError(f"the ResNet attention pool {name!r} has no MLP; drop mlp_fc/mlp_proj from --lora-targets")
        if config.dropout > 0:
            raise ValueError(f"LoRA dropout cannot act on the ResNet attention pool {name!r} (its adapters work on "
                             "the weights); set --lora-dropout 0 for this model")
        edits.append(lambda: setattr(parent, attr, LoraAttentionPool2d(module, config)))
        return edits
    else:
        if kind == "packed":
            packed = module.qkv
            if packed.out_features % 3:
                raise ValueError(f"{name}.qkv has {packed.out_features} outputs, not three equal q/k/v parts")
            if getattr(module, "q_bias", None) is not None and not getattr(module, "qkv_bias_separate", True):
                # EVA reads qkv.weight itself when it has a q/v bias; its other path calls qkv(x)
                # and adds the same bias after (equal to float rounding).
                edits.append(lambda: setattr(module, "qkv_bias_separate", True))
            edits.append(lambda: setattr(module, "qkv", LoraPackedLinear(packed, ("q", "k", "v"), config)))
        elif kind == "latent":
            kv = module.kv
            if kv.out_features % 2:
                raise ValueError(f"{name}.kv has {kv.out_features} outputs, not two equal k/v parts")
            if "q" in targets and isinstance(module.q, nn.Linear):
                edits.append(_wrap(module, "q", config))
            if targets & {"k", "v"}:
                edits.append(lambda: setattr(module, "kv", LoraPackedLinear(kv, ("k", "v"), config)))
        else:
            for target, child in zip("qkv", kind, strict=True):
                if target in targets:
                    edits.append(_wrap(module, child, config))
        if "out" in targets:
            owner, out = module, _linear_child(module, _OUT_NAMES)
            if out is None and isinstance(getattr(getattr(parent, "output", None), "dense", None), nn.Linear):
                owner, out = parent.output, ("dense", parent.output.dense)  # BERT/RoBERTa: a sibling module
            if out is None:
                raise ValueError(f"attention layer {name!r} ({type(module).__name__}) has no output projection "
                                 f"glad can adapt; drop 'out' from --lora-targets")
            edits.append(_wrap(owner, out[0], config))
    for target in ("mlp_fc", "mlp_proj"):
        if target in targets:
            mlp = getattr(parent, "mlp", None)
            found = _linear_child(mlp, _MLP_NAMES[target]) if mlp is not None else None
            if found is None:
                raise ValueError(f"LoRA target {target!r} expects an MLP with Linear layers beside attention layer "
                                 f"{name!r}; this block has none; drop {target!r} from --lora-targets")
            edits.append(_wrap(mlp, found[0], config))
    return edits


def plan_lora(model: nn.Module, config: LoraConfig) -> dict[str, list[str]]:
    """``{encoder: [attention layer names]}`` that `inject_lora` would adapt; raises the
    refusal `inject_lora` would raise, and changes nothing."""
    return {e: names for e, (names, _) in _plan(model, config).items()}


def _plan(model: nn.Module, config: LoraConfig) -> dict[str, tuple[list[str], list[Callable[[], None]]]]:
    plan = {}
    for encoder in config.encoders:
        tower = encoder_tower(model, encoder)
        sites = attention_sites(tower) if tower is not None else []
        if not sites:
            other = [e for e in ENCODERS if e != encoder][0]
            what = f"({type(tower).__name__}) has no attention layer" if tower is not None else "is missing"
            raise ValueError(f"LoRA goes into attention layers, and this model's {encoder} tower {what}; "
                             f"train the {other} tower alone with --lora-encoders {other}")
        chosen = [sites[i] for i in config.select_layers(len(sites))]
        edits = [e for name, module in chosen for e in _plan_site(tower, name, module, config)]
        plan[encoder] = ([name for name, _ in chosen], edits)
    return plan


def inject_lora(model: nn.Module, config: LoraConfig) -> nn.Module:
    """Add LoRA adapters to ``model`` in place and freeze everything else.

    Every selected attention layer gets adapters on the configured q/k/v/out projections
    (and MLP linears when targeted); afterwards only adapter parameters have
    ``requires_grad=True``. All towers are planned before anything changes, so a refusal
    (a tower without attention, a target the layer lacks) leaves the model as it was.
    Returns ``model``.
    """
    if not isinstance(config, LoraConfig):
        raise TypeError(f"config must be a LoraConfig, got {type(config).__name__}")
    if lora_config(model) is not None or any(isinstance(m, LoraAdapter) for m in model.modules()):
        raise ValueError("this model already carries LoRA adapters; inject LoRA once per model "
                         "(load a fresh model to change the LoRA config)")
    plan = _plan(model, config)
    for _, edits in plan.values():
        for edit in edits:
            edit()
    for p in model.parameters():
        p.requires_grad_(False)
    for p in lora_parameters(model):
        p.requires_grad_(True)
    setattr(model, _CONFIG_ATTR, config)
    setattr(model, _SITES_ATTR, {e: names for e, (names, _) in plan.items()})
    return model


def lora_sites(model: nn.Module) -> dict[str, list[str]]:
    """``{encoder: [attention layer names]}`` that carry adapters ({} before injection)."""
    return dict(getattr(model, _SITES_ATTR, {}))


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
        if isinstance(m, SlicedAdapters):
            m.merge_slices()
        elif isinstance(m, LoraLinear):
            m.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Take every merged adapter back out of its base weight (exact up to float rounding)."""
    for m in model.modules():
        if isinstance(m, SlicedAdapters):
            m.unmerge_slices()
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
