"""The GLAD model: open_clip loading, LoRA in both towers, AlignNet, the loss, adapter files."""

from glad.models.adapter_io import (
    AdapterMismatchError,
    load_adapter,
    read_adapter_config,
    save_adapter,
)
from glad.models.alignnet import AlignNet, cosine_logits, naive_alignnet_logits
from glad.models.glad_model import GladModel, clip_embed_dim, tokens_key
from glad.models.inject import (
    adapters_disabled,
    attention_sites,
    encoder_tower,
    inject_lora,
    is_merged,
    lora_config,
    lora_named_parameters,
    lora_parameters,
    lora_sites,
    merge_lora,
    plan_lora,
    unmerge_lora,
)
from glad.models.loading import (
    WeightsUnavailableError,
    load_clip,
    quick_gelu_of_file,
    set_offline,
    uses_quick_gelu,
)
from glad.models.lora import LoraAdapter, LoraConfig, LoraLinear
from glad.models.loss import glad_loss
from glad.models.replay import RngReplay

__all__ = [
    "AdapterMismatchError",
    "AlignNet",
    "GladModel",
    "LoraAdapter",
    "LoraConfig",
    "LoraLinear",
    "RngReplay",
    "WeightsUnavailableError",
    "adapters_disabled",
    "clip_embed_dim",
    "cosine_logits",
    "attention_sites",
    "encoder_tower",
    "glad_loss",
    "inject_lora",
    "is_merged",
    "load_adapter",
    "load_clip",
    "lora_config",
    "quick_gelu_of_file",
    "uses_quick_gelu",
    "lora_named_parameters",
    "lora_parameters",
    "lora_sites",
    "plan_lora",
    "merge_lora",
    "naive_alignnet_logits",
    "read_adapter_config",
    "save_adapter",
    "set_offline",
    "tokens_key",
    "unmerge_lora",
]
