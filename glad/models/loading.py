"""Loading an open_clip CLIP by name and weights (tag, local file, ``hf-hub:``, or none).

open_clip is imported inside the functions so that ``offline=True`` can set
``HF_HUB_OFFLINE`` before the Hugging Face hub is first imported.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import pickle
import socket
import sys
import zipfile
from urllib.parse import urlparse

import torch

from glad.config import weights_or_none
from glad.models.hf_clip import (
    hf_clip_config,
    hf_clip_weights,
    hf_quick_gelu,
    is_hf_clip_folder,
    is_hf_clip_state_dict,
    open_clip_names_for,
    to_open_clip,
)
from glad.quiet import no_random_init_warning

log = logging.getLogger("glad")

BUILTIN_TINY = "glad-tiny"
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_ALTERNATIVES = ("pass a local weights file instead (--pretrained /path/to/{model}.safetensors, or the OpenAI "
                 "{model}.pt file), --pretrained none for random weights, or --model glad-tiny for the "
                 "built-in model that works offline")


class WeightsUnavailableError(RuntimeError):
    """The requested pretrained weights cannot be had (not cached, offline, or no such file)."""


def set_offline(offline: bool = True) -> None:
    """Switch Hugging Face hub downloads off (``HF_HUB_OFFLINE=1``) for the whole process, also
    if the hub is already imported. glad's own loaders scope it to one call (`hub_offline`)."""
    if not offline:
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # the hub read the variable at import: update its copy too
        constants.HF_HUB_OFFLINE = True


def _env_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


@contextlib.contextmanager
def hub_offline(offline: bool = False):
    """Hugging Face downloads off for the block when `offline` (and when a download inside finds
    no network, see `offline_unless_reachable`); the process's own setting is back after."""
    env = os.environ.get("HF_HUB_OFFLINE")
    try:
        set_offline(offline)
        yield
    finally:
        if env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = env
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:
            constants.HF_HUB_OFFLINE = _env_offline()


_REACH_TIMEOUT_S = 3.0
_no_network: str | None = None  # why downloads were switched off in this process, if glad did it


def unreachable(url: str | None = None, timeout: float = _REACH_TIMEOUT_S) -> str | None:
    """Why `url`'s host (default: the Hugging Face hub's endpoint) cannot be reached, or None
    when it can; answered within about `timeout` seconds."""
    if url is None:
        try:
            from huggingface_hub import constants
            url = constants.ENDPOINT
        except ImportError:  # pragma: no cover - huggingface_hub comes with open_clip
            url = "https://huggingface.co"
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (80 if parsed.scheme == "http" else 443)
    if not host:
        return None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host}:{port} cannot be reached ({e.strerror or e})"
    return None


def offline_unless_reachable(url: str | None = None) -> None:
    """Before a download: without a network, switch to the cache only, and say so once.

    huggingface_hub retries every file with backoff when the network is down (about a
    minute before a lookup fails); this asks once, in seconds. Cached files still load.
    """
    global _no_network
    if offline_enabled():
        return
    if _no_network is None:  # asked once a process: a dropped connection costs the full timeout
        why = unreachable(url)
        if why is None:
            return
        _no_network = why
        log.warning("no network (%s): reading the local cache only, as with --offline", why)
    set_offline(True)  # inside glad's loaders this lasts one call (hub_offline restores it)


def offline_enabled() -> bool:
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and getattr(constants, "HF_HUB_OFFLINE", False):
        return True
    return _env_offline()


def _hf_cache(cache_dir: str | None) -> str:
    if cache_dir:
        return cache_dir
    try:
        from huggingface_hub import constants
        return constants.HF_HUB_CACHE
    except ImportError:  # pragma: no cover - huggingface_hub comes with open_clip
        return os.path.expanduser("~/.cache/huggingface/hub")


def _unavailable(what: str, model: str, cache: str | None, cause: BaseException | None) -> WeightsUnavailableError:
    state = (f"on (no network: {_no_network})" if _no_network and offline_enabled()
             else "on (HF_HUB_OFFLINE=1: nothing is downloaded)" if offline_enabled()
             else "off (a download was tried)")
    parts = [f"could not load {what} for model {model!r}"]
    if cache is not None:
        parts.append(f"cache folder: {cache}")
    parts.append(f"offline mode: {state}")
    if cause is not None:
        parts.append(f"cause: {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}")
    parts.append(_ALTERNATIVES.format(model=model))
    return WeightsUnavailableError("; ".join(parts))


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _is_torchscript(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


# Keys that only OpenAI's own checkpoints carry (their TorchScript archives and dumps of them).
_OPENAI_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")


def _config_beside(path: str) -> bool | None:
    """`quick_gelu` of an open_clip_config.json next to the weights (a Hugging Face snapshot)."""
    import json

    config = os.path.join(os.path.dirname(os.path.abspath(path)), "open_clip_config.json")
    if not os.path.isfile(config):
        return None
    try:
        with open(config, encoding="utf-8") as f:
            value = json.load(f).get("model_cfg", {}).get("quick_gelu")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, bool) else None


def _file_keys(path: str) -> set[str]:
    """The top-level keys of a weights file, without reading its tensors into memory."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return set(f.keys())
    if zipfile.is_zipfile(path):  # torch.save's format: memory-mapped, so nothing is read
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else {}
        return {k.removeprefix("module.") for k in sd} if isinstance(sd, dict) else set()
    return set()


def quick_gelu_of_file(path: str) -> tuple[bool | None, str]:
    """Whether a weights file holds QuickGELU (OpenAI) weights, and why: (True/False/None, reason).

    Signals, strongest first: an open_clip_config.json beside the file; an OpenAI TorchScript
    archive; keys only OpenAI checkpoints have; "openai" or "quickgelu" anywhere in the path
    (open_clip's own cache folders name the tag, e.g. `models--timm--vit_base_patch16_clip_224.openai`).
    None: nothing tells.
    """
    beside = _config_beside(path)
    if beside is not None:
        return beside, "the open_clip_config.json beside it"
    hf = hf_quick_gelu(os.path.dirname(os.path.abspath(path)))
    if hf is not None:
        return hf, "the transformers config.json beside it"
    if _is_torchscript(path):
        return True, "an OpenAI TorchScript archive"
    try:
        keys = _file_keys(path)
    except Exception:  # noqa: BLE001 - an unreadable file is reported when it is loaded
        keys = set()
    if keys & set(_OPENAI_ONLY_KEYS):
        return True, "OpenAI's checkpoint keys (input_resolution, context_length, vocab_size)"
    lowered = os.path.abspath(path).lower()
    if "quickgelu" in lowered or "quick_gelu" in lowered:
        return True, "'quickgelu' in its path"
    if "openai" in lowered:
        return True, "'openai' in its path"
    return None, "nothing in the file or its path tells"


def uses_quick_gelu(model: torch.nn.Module) -> bool:
    """True when the model's transformer blocks use QuickGELU (what really runs, not a setting)."""
    return any(type(m).__name__ == "QuickGELU" for m in model.modules())


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, a torch file (``weights_only=True``) or a TorchScript archive."""
    try:
        return _read_state_dict(path)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"cannot read weights from {path} ({type(e).__name__}: {first[:160]}); pass a "
                         ".safetensors, torch .pt/.bin or OpenAI TorchScript file of CLIP weights") from None


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        sd = load_file(path, device="cpu")
    elif _is_torchscript(path):
        # OpenAI's released .pt files: a TorchScript archive holds TorchScript code and tensors,
        # not arbitrary Python pickles, so torch.jit.load is the safe way to read it.
        sd = torch.jit.load(path, map_location="cpu").state_dict()
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if isinstance(sd, dict) and is_hf_clip_state_dict(sd):
        sd = to_open_clip(sd)
    if not isinstance(sd, dict) or not sd:
        raise ValueError(f"{path} holds no state dict (got {type(sd).__name__}); expected CLIP weights")
    if next(iter(sd)).startswith("module."):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    for key in _OPENAI_ONLY_KEYS:  # scalars of OpenAI's checkpoints, not weights
        sd.pop(key, None)
    return sd


def load_weights(model: torch.nn.Module, path: str) -> None:
    """Load CLIP weights from ``path`` into an open_clip model (strict), with open_clip's key fix-ups."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import (
        convert_to_custom_text_state_dict,
        resize_pos_embed,
        resize_text_pos_embed,
    )

    sd = convert_state_dict(model, read_state_dict(path))
    if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
        sd = convert_to_custom_text_state_dict(sd)
    for name in ("logit_scale", "logit_bias"):
        own = getattr(model, name, None)
        if name in sd and own is not None and own.ndim != sd[name].ndim:
            sd[name] = sd[name].reshape(own.shape)
    if "logit_bias" not in sd and getattr(model, "logit_bias", None) is not None:
        sd["logit_bias"] = torch.zeros_like(sd["logit_scale"])
    # buffers the model does not save (e.g. the causal mask) may sit in TorchScript archives
    transient = {n for n, _ in model.named_buffers()} - set(model.state_dict())
    sd = {k: v for k, v in sd.items() if k not in transient}
    try:
        resize_pos_embed(sd, model)
        resize_text_pos_embed(sd, model)  # asserts when the text width differs
        model.load_state_dict(sd, strict=True)
    except (RuntimeError, AssertionError) as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[:3])[:400]
        hint = "check that --model names the architecture these weights were trained with"
        hf = hf_clip_config(os.path.dirname(os.path.abspath(path)))
        if hf and hf.get("model_type") == "clip":
            names = open_clip_names_for(hf)
            hint = (f"this transformers CLIP has the shapes of open_clip's {', '.join(names[:3])}: pass "
                    f"--model {names[0]}" if names else "no open_clip architecture has its shapes")
        raise ValueError(f"weights in {path} do not fit the model architecture ({detail}); {hint}") from e


def _download_tag(model: str, tag: str, cfg: dict, cache_dir: str | None) -> str:
    from open_clip.pretrained import download_pretrained, has_hf_hub

    use_hub = bool(cfg.get("hf_hub")) and has_hf_hub()
    cache = _hf_cache(cache_dir) if use_hub else (cache_dir or os.path.expanduser("~/.cache/clip"))
    offline_unless_reachable(None if use_hub else cfg.get("url"))
    try:
        if not use_hub and offline_enabled():
            # open_clip would fetch the URL; offline, only an already cached file will do.
            target = os.path.join(cache, os.path.basename(cfg.get("url", "")))
            if not os.path.isfile(target):
                raise FileNotFoundError(f"{target} is not cached")
            return target
        target = download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as e:
        raise _unavailable(f"pretrained weights {tag!r}", model, cache, e) from e
    if not target:
        raise _unavailable(f"pretrained weights {tag!r}", model, cache, None)
    return target


def _decide_quick_gelu(name: str, pretrained, checkpoint: str | None, tag_cfg: dict) -> bool:
    """open_clip's rule for tags (the tag's own config); for files, `quick_gelu_of_file`."""
    import open_clip

    if open_clip.get_model_config(name).get("quick_gelu"):  # a *-quickgelu architecture
        return True
    if tag_cfg:
        return bool(tag_cfg.get("quick_gelu", False))
    if checkpoint is None:
        return False
    value, reason = quick_gelu_of_file(checkpoint)
    if value is None:
        log.warning("cannot tell whether %s holds OpenAI weights (%s): using GELU; pass --quick-gelu for "
                    "OpenAI weights, or --no-quick-gelu to confirm GELU", checkpoint, reason)
        return False
    log.info("%s: %s (%s)", os.path.basename(checkpoint), "QuickGELU" if value else "GELU", reason)
    return value


def load_clip(model: str = "ViT-B-16", pretrained: str | None = "openai", cache_dir: str | None = None,
              device=None, offline: bool = False, *, precision: str = "fp32", quick_gelu: bool | None = None,
              tokenizer: str | None = None):
    """Load an open_clip CLIP: ``(model, preprocess_train, preprocess_val, tokenizer)``.

    Args:
        model: an open_clip architecture name (``ViT-B-16``), ``hf-hub:org/repo`` or
            ``local-dir:PATH`` (config and weights from that repository or folder, as open_clip
            reads them; what ``glad export`` writes), or ``glad-tiny`` (glad's built-in CLIP).
        pretrained: an open_clip tag (``openai``), a local weights file (safetensors; torch
            files are read with ``weights_only=True``; OpenAI TorchScript ``.pt`` files work;
            transformers CLIPModel files too), a transformers CLIPModel folder (``config.json``
            + ``model.safetensors``), ``hf-hub:org/repo`` (weights for ``model``'s architecture),
            or None / ``"none"`` for random initialisation. Ignored with a schema ``model``.
        cache_dir: where downloaded weights are cached (default: the Hugging Face cache).
        device: where the model goes (default: CUDA if available, else CPU).
        offline: never download (``HF_HUB_OFFLINE=1`` for this call); cached weights still load.
        precision: open_clip precision (``fp32``, ``fp16``, ``bf16``, ``pure_fp16`` ...).
        quick_gelu: force QuickGELU on/off. By default decided as open_clip means it: the tag's
            own config for a tag; for a file, `quick_gelu_of_file` (OpenAI weights are QuickGELU),
            with a warning when nothing tells. `uses_quick_gelu(model)` says what was built.
        tokenizer: a local tokenizer (a Hugging Face tokenizer folder, or its tokenizer.json)
            instead of the one the model's config would download.

    Raises:
        WeightsUnavailableError: the weights cannot be had; the message names the tag or file,
            the cache folder, whether offline mode is on, and what to pass instead.
        ValueError: unknown model name or tag.
    """
    with hub_offline(offline):
        return _load_clip(model, pretrained, cache_dir, device, precision, quick_gelu, tokenizer)


def _load_clip(model, pretrained, cache_dir, device, precision, quick_gelu, tokenizer):
    if model == BUILTIN_TINY:
        try:
            from glad.world.tiny import load_glad_tiny
        except ImportError as e:
            raise ImportError(f"model {BUILTIN_TINY!r} needs glad.world, which failed to import ({e}); "
                              "reinstall glad or pick an open_clip model") from e
        return load_glad_tiny(pretrained=pretrained, cache_dir=cache_dir, device=device)

    import open_clip

    device = _resolve_device(device)
    pretrained = weights_or_none(pretrained)

    if model.startswith(("hf-hub:", "local-dir:")):
        if model.startswith("local-dir:"):
            folder = model[len("local-dir:"):]
            if not os.path.isfile(os.path.join(folder, "open_clip_config.json")):
                raise ValueError(f"--model {model}: {folder} holds no open_clip_config.json; pass a folder that "
                                 "`glad export` or open_clip's push_to_hf_hub wrote")
        else:
            offline_unless_reachable()
        try:
            with no_random_init_warning():
                clip, pre_train, pre_val = open_clip.create_model_and_transforms(
                    model, device=device, precision=precision, cache_dir=cache_dir, force_quick_gelu=bool(quick_gelu))
        except Exception as e:
            if model.startswith("local-dir:"):
                raise ValueError(f"open_clip could not build --model {model}: {type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''}") from e
            raise _unavailable(f"{model!r} (config and weights)", model, _hf_cache(cache_dir), e) from e
        return clip.eval(), pre_train, pre_val, load_tokenizer(model, clip, tokenizer, cache_dir)

    name = model.replace("/", "-")
    if open_clip.get_model_config(name) is None:
        known = open_clip.list_models() + [BUILTIN_TINY]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known models: {', '.join(known[:20])} ..."
        raise ValueError(f"unknown model {model!r}; {hint} (or use hf-hub:org/repo)")

    checkpoint, tag_cfg = None, {}
    if pretrained is None:
        pass
    elif os.path.isfile(pretrained):
        checkpoint = pretrained
    elif os.path.isdir(pretrained):
        if not is_hf_clip_folder(pretrained):
            hint = (f"it is an open_clip folder: pass --model local-dir:{pretrained}"
                    if os.path.isfile(os.path.join(pretrained, "open_clip_config.json")) else
                    "pass a weights file, or a transformers CLIPModel folder (config.json + model.safetensors)")
            raise ValueError(f"--pretrained {pretrained} is a folder glad cannot read weights from; {hint}")
        checkpoint = hf_clip_weights(pretrained)
    elif pretrained.startswith("hf-hub:"):
        from open_clip.pretrained import download_pretrained_from_hf
        offline_unless_reachable()
        try:
            checkpoint = download_pretrained_from_hf(pretrained[len("hf-hub:"):], cache_dir=cache_dir)
        except Exception as e:
            raise _unavailable(f"weights {pretrained!r}", model, _hf_cache(cache_dir), e) from e
    else:
        tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
        if not tag_cfg:
            if os.sep in pretrained or pretrained.lower().endswith(_WEIGHT_SUFFIXES):
                raise _unavailable(f"weights file {pretrained!r} (no such file)", model, None, None)
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise ValueError(f"unknown pretrained tag {pretrained!r} for {name}; known tags: "
                             f"{', '.join(tags) or 'none'}; or pass a local weights file or 'none'")
        checkpoint = _download_tag(model, pretrained, tag_cfg, cache_dir)

    if quick_gelu is None:
        quick_gelu = _decide_quick_gelu(name, pretrained, checkpoint, tag_cfg)
    # the tag's preprocessing (mean/std/interpolation/resize) as open_clip would apply it
    preprocess = {f"image_{k}": tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
    with no_random_init_warning():  # the weights are loaded below, or random ones were asked for
        clip, pre_train, pre_val = open_clip.create_model_and_transforms(
            name, pretrained=None, precision=precision, device=device, force_quick_gelu=quick_gelu,
            cache_dir=cache_dir, **preprocess)
    if checkpoint is not None:
        load_weights(clip, checkpoint)
    return clip.eval(), pre_train, pre_val, load_tokenizer(name, clip, tokenizer, cache_dir)


def model_config(name: str) -> dict | None:
    """open_clip's model config of a built-in name or a `local-dir:` folder (None when unknown)."""
    import json

    import open_clip

    if name.startswith("local-dir:"):
        try:
            with open(os.path.join(name[len("local-dir:"):], "open_clip_config.json"), encoding="utf-8") as f:
                return json.load(f).get("model_cfg")
        except (OSError, ValueError):
            return None
    return open_clip.get_model_config(name)


def load_tokenizer(model: str, clip, path: str | None = None, cache_dir: str | None = None):
    """The tokenizer of `model`: open_clip's own, or the local one at `path` (a Hugging Face
    tokenizer folder or tokenizer.json) with the model's context length and text cleaning."""
    import open_clip

    text_cfg = (model_config(model) or {}).get("text_cfg", {})
    if path:
        if not os.path.exists(path):
            raise ValueError(f"--tokenizer {path}: no such file or folder; pass a tokenizer folder "
                             "(tokenizer.json, tokenizer_config.json) or a tokenizer.json file")
        context = getattr(clip, "context_length", None) or text_cfg.get("context_length", 77)
        try:
            return local_tokenizer(path, context, text_cfg)
        except ImportError as e:
            raise ImportError(f"--tokenizer needs the transformers package ({e}); pip install transformers") from e
        except Exception as e:
            raise ValueError(f"--tokenizer {path} cannot be read as a Hugging Face tokenizer: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from e
    try:
        return open_clip.get_tokenizer(model, cache_dir=cache_dir)
    except ImportError as e:
        raise ImportError(f"the tokenizer of model {model!r} needs the transformers package ({e}); "
                          "pip install transformers (or glad[hf])") from None
    except Exception as e:
        source = text_cfg.get("hf_tokenizer_name") or "the Hugging Face hub"
        raise WeightsUnavailableError(
            f"could not load the tokenizer of model {model!r} ({source}: {type(e).__name__}); offline, pass a "
            f"local copy with --tokenizer PATH (a tokenizer folder or tokenizer.json)") from None


def local_tokenizer(path: str, context_length: int, text_cfg: dict):
    """open_clip's HFTokenizer on the tokenizer at `path` (its folder, or its tokenizer.json)."""
    from open_clip.tokenizer import HFTokenizer

    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(path) and os.path.basename(path) != "tokenizer.json":
        raise ValueError("expected a tokenizer folder or a file named tokenizer.json")
    return HFTokenizer(folder, context_length=context_length, tokenizer_mode=text_cfg.get("tokenizer_mode"),
                       **text_cfg.get("tokenizer_kwargs", {}))


def load_base_clip(*args, seed: int = 0, **kwargs):
    """`load_clip` with the random initialisation seeded (torch seed `seed`, the caller's RNG
    state untouched): with `pretrained=None` every process, rerun and `glad eval` builds the
    same backbone, so an adapter trained on random weights is evaluated on those weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return load_clip(*args, **kwargs)
