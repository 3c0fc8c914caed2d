"""Weights in the transformers ``CLIPModel`` format (``save_pretrained`` folders, the Hub's
``openai/clip-vit-base-patch16``), read into open_clip's CLIP layout.

The two implementations hold the same tensors under other names; q, k and v are separate
Linears in transformers and one packed ``in_proj`` in open_clip, and the projections are
transposed. The activation comes from the folder's config.json (OpenAI's are QuickGELU).
"""

from __future__ import annotations

import json
import os
import re

import torch

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_BLOCK = re.compile(r"^(text_model|vision_model)\.encoder\.layers\.(\d+)\.(.+)$")
_BLOCK_PARTS = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
_PLAIN = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "logit_scale": "logit_scale",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
}
_TRANSPOSED = {"text_projection.weight": "text_projection", "visual_projection.weight": "visual.proj"}


def is_hf_clip_folder(path: str) -> bool:
    """A folder holding a transformers CLIPModel (config.json with model_type "clip")."""
    return os.path.isdir(path) and (hf_clip_config(path) or {}).get("model_type") == "clip"


def hf_clip_config(folder: str) -> dict | None:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not readable JSON ({e}); it should be a transformers config.json") from e
    return data if isinstance(data, dict) else None


def hf_clip_weights(folder: str) -> str:
    for name in _WEIGHT_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{folder} holds a transformers CLIP config.json but no weights "
                            f"({' or '.join(_WEIGHT_FILES)}); pass the folder save_pretrained wrote")


def is_hf_clip_state_dict(sd: dict) -> bool:
    return any(k.startswith("vision_model.embeddings.") for k in sd) and any(k.startswith("text_model.") for k in sd)


def hf_quick_gelu(folder: str) -> bool | None:
    """Whether the config beside the weights names QuickGELU (None: no config there)."""
    config = hf_clip_config(folder) if os.path.isdir(folder) else None
    if not config:
        return None
    acts = {(config.get(tower) or {}).get("hidden_act") for tower in ("text_config", "vision_config")} - {None}
    return acts == {"quick_gelu"} if acts else None


def to_open_clip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIPModel state dict in open_clip's CLIP names (built-in text tower)."""
    out, qkv = {}, {}
    for key, value in sd.items():
        if key.endswith("position_ids"):
            continue  # a buffer of positions, not a weight
        if key in _PLAIN:
            out[_PLAIN[key]] = value
        elif key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.t().contiguous()
        elif m := _BLOCK.match(key):
            tower, index, rest = m.groups()
            prefix = ("visual." if tower == "vision_model" else "") + f"transformer.resblocks.{index}."
            part, _, leaf = rest.rpartition(".")
            if part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault((prefix, leaf), {})[part[-6]] = value
            elif part in _BLOCK_PARTS:
                out[prefix + _BLOCK_PARTS[part] + "." + leaf] = value
            else:
                raise ValueError(f"unexpected transformers CLIP key {key!r}")
        else:
            raise ValueError(f"unexpected transformers CLIP key {key!r}; is this a CLIPModel checkpoint?")
    for (prefix, leaf), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"{prefix}: q/k/v projections incomplete in the transformers checkpoint")
        out[f"{prefix}attn.in_proj_{leaf}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def open_clip_names_for(config: dict) -> list[str]:
    """open_clip architectures with the shapes of a transformers CLIP config (to name in errors)."""
    import open_clip

    text, vision = config.get("text_config") or {}, config.get("vision_config") or {}
    want = (config.get("projection_dim"), vision.get("hidden_size"), vision.get("num_hidden_layers"),
            vision.get("patch_size"), vision.get("image_size"), text.get("hidden_size"), text.get("num_hidden_layers"))
    names = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name) or {}
        v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        have = (cfg.get("embed_dim"), v.get("width"), v.get("layers"), v.get("patch_size"), v.get("image_size"),
                t.get("width"), t.get("layers"))
        if have == want and not v.get("timm_model_name") and not t.get("hf_model_name"):
            names.append(name)
    return names
