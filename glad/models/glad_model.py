"""GladModel: a CLIP with LoRA in both towers and AlignNet on the logits (SPEC section 1)."""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from glad.data.transforms import Preprocess
from glad.models.alignnet import DEFAULT_CHUNK_BUDGET_BYTES, AlignNet, cosine_logits
from glad.models.inject import (
    adapters_disabled,
    inject_lora,
    is_merged,
    lora_config,
    lora_named_parameters,
    merge_lora,
    switchable_modules,
    unmerge_lora,
)
from glad.models.lora import LoraConfig
from glad.models.short_text import (
    encode_text_short,
    short_text_unsupported,
    tokenizer_pad_id,
    trimmed_length,
)

_CACHE_SIZE = 8  # class sets kept (e.g. base, novel, and a few cross-dataset targets)


def clip_embed_dim(clip: nn.Module) -> int:
    """The joint embedding size D of an open_clip model (any tower family)."""
    for tower in (getattr(clip, "visual", None), getattr(clip, "text", None)):
        dim = getattr(tower, "output_dim", None)
        if isinstance(dim, int) and dim > 0:
            return dim
    proj = getattr(clip, "text_projection", None)
    if isinstance(proj, torch.Tensor):
        return int(proj.shape[1])
    if isinstance(proj, nn.Linear):
        return proj.out_features
    raise ValueError(f"cannot tell the embedding size of {type(clip).__name__}: no tower has an output_dim "
                     "and there is no text_projection; pass an open_clip CLIP / CustomTextCLIP")


def freeze_norm_statistics(module: nn.Module) -> None:
    """Put every frozen normalisation layer that keeps running statistics (BatchNorm in
    ResNet, ConvNeXt and FastViT towers) in eval mode, so training never moves them."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


def tokens_key(tokens: torch.Tensor) -> str:
    """A content hash of a token tensor (shape + values): identifies a class set's prompts."""
    data = tokens.detach().to("cpu", torch.int64).contiguous()
    digest = hashlib.sha1(str(tuple(data.shape)).encode())
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()


class GladModel(nn.Module):
    """The GLAD model around an open_clip CLIP.

    Args:
        clip_model: an open_clip CLIP / CustomTextCLIP with ViT-style towers. Its weights
            are frozen; LoRA is injected in place unless it already carries ``lora``.
        tokenizer: the model's tokenizer (``list[str] -> LongTensor``).
        lora: LoRA settings, or None for no adapters (zero-shot, or AlignNet alone).
        use_alignnet: add an AlignNet on the logits.
        model_name / pretrained: the base model's name and weights tag or file, recorded
            in adapter files so an adapter is only loaded on the model it was trained on.
        alignnet_hidden: AlignNet hidden widths.
        chunk_budget_bytes: memory bound for AlignNet's per-(image, class) intermediates.
        preprocess: the image preprocessing the model expects (default: what open_clip built
            ``clip_model`` with); recorded in adapters and used by evaluation and prediction.
        tokenizer_path: the local tokenizer the tokenizer was read from, if any (recorded).
        trim_text: let ``tokenize`` cut the padding after the longest prompt, so text encoding
            costs the prompts' length rather than the full context (exact for CLIPs whose text
            attention is causal and pooled at the end token; other models are never cut).
    """

    def __init__(self, clip_model: nn.Module, tokenizer, lora: LoraConfig | None = None,
                 use_alignnet: bool = True, model_name: str = "", pretrained: str | None = None, *,
                 alignnet_hidden: Sequence[int] = (256, 128),
                 chunk_budget_bytes: int = DEFAULT_CHUNK_BUDGET_BYTES, trim_text: bool = True,
                 preprocess: Preprocess | None = None, tokenizer_path: str | None = None):
        super().__init__()
        self.clip = clip_model
        self.tokenizer = tokenizer
        existing = lora_config(clip_model)
        if lora is not None and existing is not None and existing != lora:
            raise ValueError(f"the CLIP model already carries LoRA {existing}, which differs from the requested "
                             f"{lora}; pass lora=None to keep the existing adapters or load a fresh model")
        self.embed_dim = clip_embed_dim(clip_model)  # before any change: a refusal leaves the model as it was
        if lora is not None and existing is None:
            inject_lora(clip_model, lora)
        self.lora_config: LoraConfig | None = lora_config(clip_model)
        for name, p in clip_model.named_parameters():
            p.requires_grad_(name.endswith(("lora_A.weight", "lora_B.weight")))
        device = next(clip_model.parameters()).device
        # AlignNet stays in float32 whatever the backbone precision: it is tiny and its
        # logits feed the loss directly.
        self.alignnet = (AlignNet(self.embed_dim, alignnet_hidden, device=device, dtype=torch.float32)
                         if use_alignnet else None)
        self.model_name = model_name
        self.pretrained = pretrained
        self.preprocess = preprocess if preprocess is not None else Preprocess.of_model(clip_model)
        self.tokenizer_path = tokenizer_path
        self.chunk_budget_bytes = int(chunk_budget_bytes)
        # decided once here (reading the mask once), so encode_text never syncs
        self._short_text_reason = short_text_unsupported(clip_model)
        self._pad_id = tokenizer_pad_id(tokenizer)
        self.trims_text = bool(trim_text) and self._short_text_reason is None and self._pad_id is not None
        self._zs_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._switchable: list[nn.Module] | None = None
        self._zs_memo: dict[int, tuple] = {}  # id(tokens) -> (weakref, version, key): skips re-hashing

    def train(self, mode: bool = True) -> GladModel:
        """As `nn.Module.train`, but the frozen backbone's normalisation statistics stay fixed:
        the tuned model and its zero-shot teacher both see the pretrained BatchNorm."""
        super().train(mode)
        freeze_norm_statistics(self.clip)
        return self

    # ----------------------------------------------------------------- encoders
    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token ids ``[len(prompts), L]`` (on the CPU).

        L is the context length, or, when ``trims_text``, the columns through the longest
        prompt's end token (every non-pad token is kept); ``encode_text`` gives the same
        features either way.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        tokens = self.tokenizer(list(prompts))
        if (self.trims_text and isinstance(tokens, torch.Tensor) and tokens.device.type == "cpu"
                and tokens.dim() == 2 and tokens.shape[1] == self.clip.context_length):
            length = trimmed_length(tokens, self._pad_id, self.clip.text_pool_type,
                                    getattr(self.clip, "text_eos_id", None))
            if length < tokens.shape[1]:
                tokens = tokens[:, :length].contiguous()
        return tokens

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features ``[B, D]`` (through the adapters, if on)."""
        visual = self.clip.visual
        dtype = next(visual.parameters()).dtype
        images = images.to(device=self.device, dtype=dtype if images.is_floating_point() else None)
        return self.clip.encode_image(images, normalize=True)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """L2-normalised text features ``[C, D]``; gradients reach the text LoRA when enabled.

        ``tokens`` may be shorter than the context (as ``tokenize`` trims them): they are read
        as right-padded with the pad token. A causal CLIP runs only the given positions.
        """
        tokens = tokens.to(self.device)
        context = getattr(self.clip, "context_length", None)
        if isinstance(context, int) and tokens.dim() == 2 and 0 < tokens.shape[1] < context:
            if self._short_text_reason is None:
                return encode_text_short(self.clip, tokens, normalize=True)
            if self._pad_id is not None:  # this model needs the full context back
                tokens = F.pad(tokens, (0, context - tokens.shape[1]), value=self._pad_id)
        return self.clip.encode_text(tokens, normalize=True)

    # ------------------------------------------------------------------- logits
    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` logits: ``exp(logit_scale) * <f, normalize(t + AlignNet(f, t))>`` in float32.

        Without AlignNet (or with it switched off) the text shift is zero. AlignNet's per-pair
        work runs in class chunks bounded by ``chunk_budget_bytes``.
        """
        with torch.autocast(device_type=image_features.device.type, enabled=False):
            f, t = image_features.float(), text_features.float()
            scale = self.clip.logit_scale.float().exp()
            if self.alignnet is not None and not self.alignnet.disabled:
                out = self.alignnet.logits(f, t, scale, self.chunk_budget_bytes)
            else:
                out = cosine_logits(f, t, scale)
            bias = getattr(self.clip, "logit_bias", None)
            if bias is not None:
                out = out + bias.float()
        return out

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of the tuned model for ``images`` against the classes in ``tokens``."""
        return self.logits(self.encode_image(images), self.encode_text(tokens))

    # --------------------------------------------------------------- zero-shot
    def _cache_key(self, tokens: torch.Tensor) -> tuple:
        memo = self._zs_memo.get(id(tokens))
        if memo is not None and memo[0]() is tokens and memo[1] == tokens._version:
            digest = memo[2]  # the same tensor, unchanged: skip re-hashing it
        else:
            digest = tokens_key(tokens)
            if len(self._zs_memo) > 4 * _CACHE_SIZE:
                self._zs_memo = {k: v for k, v in self._zs_memo.items() if v[0]() is not None}
            self._zs_memo[id(tokens)] = (weakref.ref(tokens), tokens._version, digest)
        device = self.device
        # features made under autocast are lower precision: keep them apart from float32 ones
        autocast = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        return digest, str(device), str(self.clip.logit_scale.dtype), str(autocast)

    @torch.no_grad()
    def zeroshot_text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text features of the frozen model (adapters off), computed once per class set."""
        key = self._cache_key(tokens)
        feats = self._zs_cache.get(key)
        if feats is None:
            with adapters_disabled(self, self.adapter_switches()):
                feats = self.encode_text(tokens)
            self._zs_cache[key] = feats
            while len(self._zs_cache) > _CACHE_SIZE:
                self._zs_cache.popitem(last=False)
        else:
            self._zs_cache.move_to_end(key)
        return feats

    def clear_zeroshot_cache(self) -> None:
        self._zs_cache.clear()
        self._zs_memo.clear()

    @torch.no_grad()
    def zeroshot_logits(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` logits of the frozen zero-shot CLIP (adapters and AlignNet off, no grad).

        The same weights serve both models (no copy); text features are cached per class set.
        On a merged model the adapters are taken out and put back around the call, so teacher
        passes belong to unmerged training.
        """
        with adapters_disabled(self, self.adapter_switches()):
            text = self.zeroshot_text_features(tokens)
            return self.logits(self.encode_image(images), text)

    def adapter_switches(self) -> list[nn.Module]:
        """The modules the teacher pass switches off, collected on first use (the model's
        structure is fixed once built) instead of walking 570 modules twice per step."""
        if self._switchable is None:
            self._switchable = switchable_modules(self)
        return self._switchable

    # --------------------------------------------------------------- training
    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) for LoRA then AlignNet, names relative to this module."""
        named = [("clip." + n, p) for n, p in lora_named_parameters(self.clip)]
        if self.alignnet is not None:
            named += [("alignnet." + n, p) for n, p in self.alignnet.named_parameters()]
        return named

    def trainable_parameters(self) -> list[nn.Parameter]:
        """LoRA and AlignNet parameters (nothing of the backbone), in a fixed order."""
        return [p for _, p in self.named_trainable_parameters()]

    # ---------------------------------------------------------------- merging
    def merge(self) -> None:
        """Fold LoRA into the base weights (fast inference); AlignNet is unaffected."""
        merge_lora(self.clip)

    def unmerge(self) -> None:
        unmerge_lora(self.clip)

    @contextlib.contextmanager
    def merged(self):
        """Run the block with LoRA merged into the weights; the previous state is restored after."""
        if is_merged(self.clip):
            yield self
            return
        merge_lora(self.clip)
        try:
            yield self
        finally:
            unmerge_lora(self.clip)

    def extra_repr(self) -> str:
        return (f"model_name={self.model_name!r}, pretrained={self.pretrained!r}, lora={self.lora_config}, "
                f"alignnet={self.alignnet is not None}")
