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


# ------------------------------------------------------------------ open_clip -> transformers

_PLAIN_BACK = {v: k for k, v in _PLAIN.items()}
_TRANSPOSED_BACK = {v: k for k, v in _TRANSPOSED.items()}
_OPEN_CLIP_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_BLOCK_PARTS_BACK = {v: k for k, v in _BLOCK_PARTS.items()}


def from_open_clip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip CLIP state dict (OpenAI architecture) in transformers' CLIPModel names."""
    out = {}
    for key, value in sd.items():
        if key == "attn_mask" or key.endswith(".attn_mask"):
            continue  # the causal mask, rebuilt by both libraries
        if key in _PLAIN_BACK:
            out[_PLAIN_BACK[key]] = value
        elif key in _TRANSPOSED_BACK:
            out[_TRANSPOSED_BACK[key]] = value.t().contiguous()
        elif m := _OPEN_CLIP_BLOCK.match(key):
            visual, index, rest = m.groups()
            prefix = f"{'vision_model' if visual else 'text_model'}.encoder.layers.{index}."
            part, _, leaf = rest.rpartition(".")
            if part == "attn" and leaf in ("in_proj_weight", "in_proj_bias"):
                for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3), strict=True):
                    out[f"{prefix}self_attn.{name}.{leaf[len('in_proj_'):]}"] = chunk.contiguous()
            elif part in _BLOCK_PARTS_BACK:
                out[prefix + _BLOCK_PARTS_BACK[part] + "." + leaf] = value
            else:
                raise ValueError(f"open_clip key {key!r} has no place in transformers' CLIPModel")
        else:
            raise ValueError(f"open_clip key {key!r} has no place in transformers' CLIPModel")
    return out


def _unsupported(clip) -> str | None:
    """Why transformers' CLIPModel cannot compute what `clip` computes (None when it can)."""
    import open_clip
    from open_clip.transformer import VisionTransformer

    if type(clip) is not open_clip.CLIP:
        return f"it is a {type(clip).__name__} (its text tower is not the OpenAI transformer)"
    v = clip.visual
    if not isinstance(v, VisionTransformer):
        return f"its image tower is a {type(v).__name__}, not a ViT"
    checks = [
        (v.attn_pool is None and v.pool_type == "tok" and not v.final_ln_after_pool, "the ViT pools otherwise than its class token"),
        (v.conv1.bias is None and isinstance(v.ln_pre, torch.nn.LayerNorm), "the ViT's stem differs from OpenAI's"),
        (v.image_size[0] == v.image_size[1] and v.patch_size[0] == v.patch_size[1], "its images or patches are not square"),
        (clip.text_pool_type == "argmax" and isinstance(clip.text_projection, torch.nn.Parameter),
         "the text tower pools or projects otherwise than at the end-of-text token"),
        (all(isinstance(b.ls_1, torch.nn.Identity) for b in (*v.transformer.resblocks, *clip.transformer.resblocks)),
         "its blocks use layer scale"),
    ]
    return next((why for ok, why in checks if not ok), None)


def _hf_tokenizer(tokenizer, context_length: int, transformers):
    """transformers' CLIPTokenizer with open_clip's BPE vocabulary and merges."""
    from open_clip.tokenizer import SimpleTokenizer

    if not isinstance(tokenizer, SimpleTokenizer):
        raise ValueError(f"the model's tokenizer is a {type(tokenizer).__name__}, not CLIP's BPE tokenizer; "
                         "export --format open_clip instead")
    names = {i: t for t, i in tokenizer.encoder.items()}
    vocab = dict(tokenizer.encoder)
    vocab["<|startoftext|>"] = vocab.pop(names[tokenizer.sot_token_id])
    vocab["<|endoftext|>"] = vocab.pop(names[tokenizer.eot_token_id])
    merges = [pair for pair, _ in sorted(tokenizer.bpe_ranks.items(), key=lambda kv: kv[1])]
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=context_length)


def _image_processor(preprocess, transformers):
    """transformers' CLIPImageProcessor doing what glad's (open_clip's) test transform does."""
    from PIL import Image

    h, w = preprocess.size
    resample = Image.BICUBIC if preprocess.interpolation == "bicubic" else Image.BILINEAR
    if preprocess.resize_mode == "shortest" and h == w:
        geometry = {"size": {"shortest_edge": h}, "crop_size": {"height": h, "width": w}, "do_center_crop": True}
    elif preprocess.resize_mode == "squash":
        geometry = {"size": {"height": h, "width": w}, "do_center_crop": False}
    else:
        raise ValueError(f"transformers' CLIPImageProcessor has no {preprocess.resize_mode!r} resize of {h}x{w} "
                         "images; export --format open_clip instead")
    return transformers.CLIPImageProcessor(**geometry, resample=resample, image_mean=list(preprocess.mean),
                                           image_std=list(preprocess.std), do_convert_rgb=True)


def to_transformers(model, transformers):
    """(transformers CLIPModel holding `model`'s CLIP with LoRA merged, its CLIPProcessor).

    `model` is a GladModel; raises ValueError (one line) for a model transformers' CLIPModel
    does not compute the same way."""
    from glad.models.inject import is_merged, merge_lora
    from glad.models.lora import LoraAdapter

    clip = model.clip
    if why := _unsupported(clip):
        raise ValueError(f"transformers' CLIPModel holds OpenAI-architecture ViT CLIPs, and {model.model_name} "
                         f"differs: {why}; export --format open_clip or --format peft instead")
    if model.lora_config is not None and not is_merged(clip):
        merge_lora(clip)
    from glad.models.loading import uses_quick_gelu

    v, t = clip.visual, clip.transformer
    act = "quick_gelu" if uses_quick_gelu(clip) else "gelu"

    def tower(blocks, width):
        return {"hidden_size": width, "num_hidden_layers": len(blocks), "num_attention_heads": blocks[0].attn.num_heads,
                "intermediate_size": blocks[0].mlp.c_fc.out_features, "hidden_act": act,
                "layer_norm_eps": blocks[0].ln_1.eps}

    embed = clip.text_projection.shape[1]
    text_cfg = {**tower(t.resblocks, clip.token_embedding.embedding_dim), "projection_dim": embed,
                "vocab_size": clip.token_embedding.num_embeddings,
                "max_position_embeddings": clip.positional_embedding.shape[0],
                "bos_token_id": model.tokenizer.sot_token_id if hasattr(model.tokenizer, "sot_token_id") else 49406,
                "eos_token_id": model.tokenizer.eot_token_id if hasattr(model.tokenizer, "eot_token_id") else 49407,
                "pad_token_id": model.tokenizer.eot_token_id if hasattr(model.tokenizer, "eot_token_id") else 49407}
    vision_cfg = {**tower(v.transformer.resblocks, v.conv1.out_channels), "projection_dim": embed,
                  "image_size": v.image_size[0], "patch_size": v.patch_size[0]}
    config = transformers.CLIPConfig(text_config=text_cfg, vision_config=vision_cfg, projection_dim=embed,
                                     logit_scale_init_value=float(clip.logit_scale))
    hf = transformers.CLIPModel(config).eval()
    skip = {f"{n}.{leaf}" for n, m in clip.named_modules() if isinstance(m, LoraAdapter)
            for leaf in ("lora_A.weight", "lora_B.weight")}
    sd = from_open_clip({k: x.detach().float().cpu() for k, x in clip.state_dict().items() if k not in skip})
    result = hf.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise ValueError(f"{model.model_name} does not map onto transformers' CLIPModel: missing {missing[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]}; export --format open_clip instead")
    tokenizer = _hf_tokenizer(model.tokenizer, clip.positional_embedding.shape[0], transformers)
    processor = transformers.CLIPProcessor(image_processor=_image_processor(model.preprocess, transformers),
                                           tokenizer=tokenizer)
    return hf, processor


@torch.no_grad()
def transformers_difference(model, hf, prompts: list[str]) -> float:
    """The largest |difference| between the unit image and text features of glad's merged model
    and of `hf` (one random image; `prompts` as the same token ids), for the export's check."""
    import torch.nn.functional as F

    clip = model.clip
    device = clip.logit_scale.device
    size = clip.visual.image_size[0]
    image = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    tokens = model.tokenizer(prompts)
    pairs = [(clip.encode_image(image.to(device)).cpu(), hf.get_image_features(pixel_values=image)),
             (clip.encode_text(tokens.to(device)).cpu(), hf.get_text_features(input_ids=tokens))]
    return max((F.normalize(ours.float(), dim=-1) - F.normalize(getattr(theirs, "pooler_output", theirs), dim=-1))
               .abs().max().item() for ours, theirs in pairs)


def tokenizer_mismatches(tokenizer, hf_tokenizer, prompts: list[str]) -> list[str]:
    """The prompts transformers' tokenizer encodes otherwise than open_clip's (its fast CLIP
    tokenizer does not run ftfy: curly quotes, for one, stay as they are)."""
    ids = tokenizer(prompts)
    out = []
    for prompt, row in zip(prompts, ids, strict=True):
        ours = row[row.nonzero()].flatten().tolist()
        if hf_tokenizer(prompt, truncation=True)["input_ids"] != ours:
            out.append(prompt)
    return out
