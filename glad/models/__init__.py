"""The GLAD model: open_clip loading, LoRA in both towers, AlignNet, the loss, adapter files."""

from glad.models.inject import (
    adapters_disabled,
    encoder_blocks,
    inject_lora,
    is_merged,
    lora_config,
    lora_named_parameters,
    lora_parameters,
    merge_lora,
    unmerge_lora,
)
from glad.models.lora import LoraAdapter, LoraConfig, LoraLinear
from glad.models.replay import RngReplay

__all__ = [
    "LoraAdapter",
    "LoraConfig",
    "LoraLinear",
    "RngReplay",
    "adapters_disabled",
    "encoder_blocks",
    "inject_lora",
    "is_merged",
    "lora_config",
    "lora_named_parameters",
    "lora_parameters",
    "merge_lora",
    "unmerge_lora",
]
