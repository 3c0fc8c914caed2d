"""Tiny open_clip CLIPs built in memory, for tests and examples (no weights, no files).

They use the real open_clip classes (so LoRA injection, masks and pooling are exercised
as on ViT-B-16) at a size that runs in milliseconds on a CPU.
"""

from __future__ import annotations

import copy

import torch

TINY_EMBED_DIM = 32


def tiny_clip_config(**overrides) -> dict:
    """An open_clip model config (``embed_dim`` / ``vision_cfg`` / ``text_cfg``) for a tiny ViT CLIP.

    ``overrides`` may hold top-level keys and ``vision_cfg`` / ``text_cfg`` dicts, which are
    merged into the defaults (e.g. ``vision_cfg={"qk_norm": True}``).
    """
    cfg = {
        "embed_dim": TINY_EMBED_DIM,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "head_width": 16, "layers": 2,
                       "mlp_ratio": 2.0},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 48, "heads": 4, "layers": 2,
                     "mlp_ratio": 2.0},
    }
    overrides = copy.deepcopy(overrides)
    for tower in ("vision_cfg", "text_cfg"):
        cfg[tower].update(overrides.pop(tower, {}))
    cfg.update(overrides)
    return cfg


def build_tiny_clip(seed: int = 0, **overrides):
    """``(model, tokenizer)``: a randomly initialised tiny CLIP (or CustomTextCLIP with ``custom_text=True``)."""
    import open_clip

    cfg = tiny_clip_config(**overrides)
    custom_text = cfg.pop("custom_text", False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
        model = cls(**cfg).eval()
    tokenizer = open_clip.SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
    return model, tokenizer


def build_tiny_glad(lora="default", alignnet: bool = True, *, model_name: str = "tiny", pretrained=None,
                    alignnet_hidden=None, **clip_overrides):
    """A GladModel around `build_tiny_clip(**clip_overrides)`: LoRA of `lora` (a LoraConfig,
    ``"default"`` for rank 8 in q/k/v, None for none) and AlignNet when `alignnet`."""
    from glad.models import GladModel, LoraConfig

    clip, tokenizer = build_tiny_clip(**clip_overrides)
    extra = {} if alignnet_hidden is None else {"alignnet_hidden": alignnet_hidden}
    return GladModel(clip, tokenizer, lora=LoraConfig() if lora == "default" else lora, use_alignnet=alignnet,
                     model_name=model_name, pretrained=pretrained, **extra)
