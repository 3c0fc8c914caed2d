"""Adapter folders: ``adapter_config.json`` + ``adapter_model.safetensors`` (PEFT's file names).

The config is glad's own (``format: glad-adapter``), not a PEFT LoraConfig: it carries no
``peft_type``, so PEFT refuses the folder rather than reading glad's settings as its own
(a rank-16 adapter read as rank 8). Adapters written before carry ``peft_type`` and load.

A folder written by ``glad export --format peft`` is a PEFT adapter of the plain open_clip
model; its ``glad_adapter.json`` (``exported_as: peft``) is glad's config, and its packed
tensors are read back into glad's per-projection adapters (glad.models.peft_format).

Keys: ``base_model.model.<module path>.lora_{A,B}.weight`` for LoRA (module paths of the
open_clip model, e.g. ``visual.transformer.resblocks.0.attn.q_proj``) and
``alignnet.<name>`` for AlignNet. The config records our LoRA settings, the AlignNet
shape and the base model (name and weights), so an adapter cannot silently be loaded
onto a model it was not trained on. Both files are written atomically.
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn as nn

from glad.models.inject import (
    is_merged,
    lora_config,
    lora_named_parameters,
    merge_lora,
    unmerge_lora,
)
from glad.models.loading import uses_quick_gelu
from glad.models.lora import LoraConfig

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
SIDECAR_NAME = "glad_adapter.json"  # glad's config beside an export in another format
LORA_PREFIX = "base_model.model."
ALIGNNET_PREFIX = "alignnet."
FORMAT = "glad-adapter"
FORMAT_VERSION = 1


class AdapterMismatchError(ValueError):
    """An adapter folder does not fit the model it is being loaded into."""


def _parts(model: nn.Module):
    """(clip, alignnet or None, model_name, pretrained) for a GladModel or a bare CLIP."""
    clip = getattr(model, "clip", model)
    return clip, getattr(model, "alignnet", None), getattr(model, "model_name", ""), getattr(model, "pretrained", None)


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors an adapter file holds for ``model`` (a GladModel or a CLIP with LoRA)."""
    clip, alignnet, _, _ = _parts(model)
    tensors = {LORA_PREFIX + n: p for n, p in lora_named_parameters(clip)}
    if alignnet is not None:
        tensors.update({ALIGNNET_PREFIX + n: p for n, p in alignnet.named_parameters()})
    return tensors


def adapter_config_dict(model: nn.Module) -> dict:
    import glad

    clip, alignnet, model_name, pretrained = _parts(model)
    lora = lora_config(clip)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "glad_version": glad.__version__,
        "base_model_name_or_path": model_name,
        "pretrained": pretrained,
        "quick_gelu": uses_quick_gelu(clip),
        "preprocess": model.preprocess.to_dict() if hasattr(model, "preprocess") else None,
        "tokenizer": getattr(model, "tokenizer_path", None),
        "lora": None if lora is None else lora.to_dict(),
        "alignnet": None if alignnet is None else {"embed_dim": alignnet.embed_dim, "hidden": list(alignnet.hidden)},
    }


def save_adapter(model: nn.Module, folder: str, *, classnames: list[str] | None = None,
                 template: str | None = None, template_override: str | None = None) -> str:
    """Write ``model``'s LoRA and AlignNet weights and config to ``folder``; returns the folder.

    Only adapter parameters are written (a few MB for ViT-B-16), never the backbone.
    `classnames` and `template` (the prompt the adapter was trained with) are recorded so
    that the adapter can classify new images on its own (`glad predict`); `template_override`
    is the `--template` given at training, which `glad eval` applies again by default.
    The folder is what ``huggingface_hub.upload_folder`` takes.
    """
    from safetensors.torch import save_file

    from glad.io import atomic_path

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in adapter_tensors(model).items()}
    if not tensors:
        raise ValueError("this model has neither LoRA adapters nor an AlignNet: nothing to save")
    os.makedirs(folder, exist_ok=True)
    config = adapter_config_dict(model)
    config.update({"classnames": None if classnames is None else list(classnames), "template": template,
                   "template_override": template_override})
    with atomic_path(os.path.join(folder, WEIGHTS_NAME)) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt", "glad_version": config["glad_version"]})
    with atomic_path(os.path.join(folder, CONFIG_NAME)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    return folder


def read_adapter_config(folder: str) -> dict:
    """The parsed ``adapter_config.json`` of an adapter folder (to build a matching model)."""
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {CONFIG_NAME} in {folder!r}; pass a folder written by save_adapter "
                                f"(it holds {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except ValueError as e:
        raise AdapterMismatchError(f"{path} is not valid JSON ({e}); restore it from the run's adapter folder "
                                   "or retrain that job") from None
    if isinstance(config, dict) and config.get("peft_type") and "format" not in config:
        sidecar = os.path.join(folder, SIDECAR_NAME)
        if not os.path.isfile(sidecar):
            raise AdapterMismatchError(
                f"{path} is a PEFT adapter (peft_type {config['peft_type']}) without glad's {SIDECAR_NAME}; glad "
                "reads the PEFT folders glad export --format peft writes; load this one with "
                "peft.PeftModel.from_pretrained, or pass a folder glad train wrote")
        path = sidecar
        try:
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        except ValueError as e:
            raise AdapterMismatchError(f"{path} is not valid JSON ({e}); export the adapter again") from None
        if not isinstance(config, dict) or config.get("exported_as") != "peft":
            raise AdapterMismatchError(f"{path} does not describe a PEFT export (exported_as="
                                       f"{config.get('exported_as') if isinstance(config, dict) else None!r}); "
                                       "export the adapter again with glad export --format peft")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise AdapterMismatchError(f"{path} is not a glad adapter config (format={config.get('format')!r}, "
                                   f"expected {FORMAT!r})")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise AdapterMismatchError(f"{path} has format_version {config['format_version']}, newer than this glad "
                                   f"understands ({FORMAT_VERSION}); upgrade glad")
    return config


def _same_weights(saved, current) -> bool:
    # A local weights file may live in another folder on another machine: compare file names.
    if saved == current:
        return True
    if isinstance(saved, str) and isinstance(current, str) and (os.sep in saved or os.sep in current):
        return os.path.basename(saved) == os.path.basename(current)
    return False


def _check_config(config: dict, model: nn.Module, folder: str, check_base: bool) -> None:
    clip, alignnet, model_name, pretrained = _parts(model)
    saved_lora = None if config.get("lora") is None else LoraConfig.from_dict(config["lora"])
    lora = lora_config(clip)

    def differs(a: LoraConfig | None, b: LoraConfig | None) -> bool:
        if a is None or b is None:
            return a is not b
        # dropout changes training only, not what the weights mean
        return {**a.to_dict(), "dropout": 0} != {**b.to_dict(), "dropout": 0}

    if differs(saved_lora, lora):
        raise AdapterMismatchError(
            f"adapter in {folder!r} was trained with LoRA {saved_lora}, but the model has {lora}; "
            "build the model with the adapter's settings (GladModel(..., lora=LoraConfig.from_dict("
            "read_adapter_config(folder)['lora'])))")
    saved_net = config.get("alignnet")
    net = None if alignnet is None else {"embed_dim": alignnet.embed_dim, "hidden": list(alignnet.hidden)}
    if saved_net != net:
        raise AdapterMismatchError(
            f"adapter in {folder!r} has AlignNet {saved_net}, but the model has {net}; "
            f"build the model with use_alignnet={saved_net is not None}"
            + (f" and alignnet_hidden={saved_net['hidden']}" if saved_net else ""))
    if check_base:
        saved_name, saved_weights = config.get("base_model_name_or_path"), config.get("pretrained")
        if saved_name != model_name or not _same_weights(saved_weights, pretrained):
            raise AdapterMismatchError(
                f"adapter in {folder!r} was trained on model {saved_name!r} with weights {saved_weights!r}, "
                f"but this model is {model_name!r} with weights {pretrained!r}; load the adapter on "
                f"--model {saved_name} --pretrained {saved_weights} (or pass check_base=False to override)")
        saved_gelu = config.get("quick_gelu")
        if saved_gelu is not None and saved_gelu != uses_quick_gelu(clip):
            raise AdapterMismatchError(
                f"adapter in {folder!r} was trained on a model with {'QuickGELU' if saved_gelu else 'GELU'} "
                f"activations, but this one uses {'GELU' if saved_gelu else 'QuickGELU'}; load the base model "
                f"with quick_gelu={saved_gelu} (--{'' if saved_gelu else 'no-'}quick-gelu)")


def load_adapter(model: nn.Module, folder: str, *, check_base: bool = True) -> nn.Module:
    """Load an adapter folder into ``model`` in place (exact copy of the saved values).

    Fails with ``AdapterMismatchError`` naming the difference when the folder's LoRA
    settings, AlignNet shape, base model or tensor names/shapes do not match ``model``.
    Returns ``model``.
    """
    from safetensors.torch import load_file

    config = read_adapter_config(folder)
    _check_config(config, model, folder, check_base)
    path = os.path.join(folder, WEIGHTS_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {folder!r} (the adapter folder is incomplete)")
    try:
        saved = load_file(path, device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises its own types for a damaged file
        raise AdapterMismatchError(f"cannot read {path} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                                   "the file is damaged or truncated: train the adapter again or restore it") from None
    if config.get("exported_as") == "peft":
        from glad.models.peft_format import from_peft

        saved = {LORA_PREFIX + k: v for k, v in from_peft(_parts(model)[0], saved, path).items()}
    params = adapter_tensors(model)
    missing, unexpected = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
    if missing or unexpected:
        raise AdapterMismatchError(
            f"adapter tensors in {path} do not match the model: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for key, p in params.items():
        if tuple(saved[key].shape) != tuple(p.shape):
            raise AdapterMismatchError(f"adapter tensor {key} has shape {tuple(saved[key].shape)} in {path}, "
                                       f"but the model expects {tuple(p.shape)}")
    clip = _parts(model)[0]
    was_merged = is_merged(clip)
    if was_merged:  # the merged update must be the loaded one: take the old one out first
        unmerge_lora(clip)
    with torch.no_grad():
        for key, p in params.items():
            p.copy_(saved[key].to(device=p.device, dtype=p.dtype))
    if was_merged:
        merge_lora(clip)
    return model
