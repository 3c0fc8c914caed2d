"""glad-tiny: a small open_clip CLIP pretrained on the world, built on first use and cached.

    model, preprocess_train, preprocess_val, tokenizer = load_glad_tiny()

The first call pretrains it (a few minutes on a 2-core CPU, with a progress bar) and
writes `<cache>/models/glad-tiny-default.safetensors`; later calls load that file. The
file carries its pretraining config and the hashes of the world's generator and of
the pretraining code, so an edit to either makes the cache stale and it is rebuilt.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from glad.config import weights_or_none
from glad.quiet import no_random_init_warning
from glad.world.cache import (
    atomic_write_bytes,
    atomic_write_json,
    cache_root,
    file_lock,
    generator_hash,
    source_hash,
)
from glad.world.pretrain import BUDGETS, PretrainConfig, pretrain

MODEL_NAME = "glad-tiny"
PRETRAINED_TAG = "glad-world"

# 32 px pictures in 8x8 patches of 4 px (a shape has to span several patches to be
# seen); three 96-wide blocks a tower, two on the text side (its words are few); the
# text side keeps open_clip's BPE vocabulary (49408 tokens) so its tokenizer works as is.
MODEL_CONFIG: dict = {
    "embed_dim": 96,
    "vision_cfg": {"image_size": 32, "patch_size": 4, "width": 96, "layers": 3, "head_width": 32,
                   "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 96, "heads": 3, "layers": 2,
                 "mlp_ratio": 2.0},
}


def register_model_config() -> None:
    """Make `open_clip.create_model("glad-tiny")` and `open_clip.get_tokenizer("glad-tiny")` work."""
    import open_clip

    if open_clip.get_model_config(MODEL_NAME) == MODEL_CONFIG:
        return
    # open_clip's public hook takes a JSON file named after the model; the cache is the one
    # place glad may write. Where it cannot, the registry dict is the only way in.
    path = cache_root() / "open_clip_configs" / f"{MODEL_NAME}.json"
    try:
        if not path.is_file() or json.loads(path.read_text()) != MODEL_CONFIG:
            atomic_write_json(path, MODEL_CONFIG)
        open_clip.add_model_config(path)
    except OSError:
        from open_clip import factory

        factory._MODEL_CONFIGS[MODEL_NAME] = json.loads(json.dumps(MODEL_CONFIG))


def _metadata(cfg: PretrainConfig) -> dict:
    """What a cached checkpoint must match to be fresh (threads only change speed)."""
    train = {k: v for k, v in cfg.to_dict().items() if k != "threads"}
    return {"model": MODEL_NAME, "model_config": MODEL_CONFIG, "pretrain_config": train,
            "generator": generator_hash(), "recipe": source_hash(("pretrain",))}


def _budget(budget: str | PretrainConfig | None) -> tuple[str, PretrainConfig]:
    if isinstance(budget, PretrainConfig):
        return "custom-" + source_hash((), extra=_metadata(budget)["pretrain_config"])[:8], budget
    name = budget or os.environ.get("GLAD_TINY_BUDGET") or "default"
    if name not in BUDGETS:
        raise ValueError(f"unknown glad-tiny budget {name!r}; use one of {', '.join(BUDGETS)} "
                         f"or pass a PretrainConfig")
    return name, BUDGETS[name]


def checkpoint_path(budget: str | PretrainConfig | None = None, cache_dir=None) -> Path:
    """Where the glad-tiny weights of `budget` are cached."""
    name, _ = _budget(budget)
    return cache_root(cache_dir) / "models" / f"{MODEL_NAME}-{name}.safetensors"


def read_metadata(path: str | os.PathLike) -> dict | None:
    """The glad metadata of a glad-tiny checkpoint, or None if it has none or is unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta["glad"]) if "glad" in meta else None
    except Exception:  # a truncated or foreign file is simply stale
        return None


def is_fresh(path: str | os.PathLike, cfg: PretrainConfig) -> bool:
    """True when `path` holds weights made by this generator, recipe and config."""
    meta = read_metadata(path) if Path(path).is_file() else None
    return meta is not None and {k: meta.get(k) for k in _metadata(cfg)} == _metadata(cfg)


def create_model(device=None):
    """A randomly initialised glad-tiny open_clip model (eval mode) and its tokenizer."""
    import open_clip

    register_model_config()
    with torch.random.fork_rng(devices=[]), no_random_init_warning():  # fixed init; caller's RNG untouched
        torch.manual_seed(0)
        model = open_clip.create_model(MODEL_NAME, pretrained=None, device=device or "cpu")
    return model.eval(), open_clip.get_tokenizer(MODEL_NAME)


def ensure_pretrained(budget: str | PretrainConfig | None = None, cache_dir=None, *, progress: bool = True) -> Path:
    """The path of fresh pretrained glad-tiny weights, pretraining them first if needed."""
    name, cfg = _budget(budget)
    path = checkpoint_path(budget, cache_dir)
    if is_fresh(path, cfg):
        return path
    with file_lock(path.with_suffix(".lock"), waiting=f"glad-tiny: waiting for another process that is building "
                                                      f"{path.name} (it takes a few minutes, once)"):
        if is_fresh(path, cfg):  # another process built it while we waited
            return path
        if progress:
            why = "is stale (the world or its recipe changed)" if path.exists() else "is not built yet"
            print(f"glad-tiny: {path} {why}; pretraining it on the built-in world "
                  f"({cfg.steps} steps, a few minutes on a CPU, once)", file=sys.stderr, flush=True)
        model, tokenizer = create_model("cpu")
        history = pretrain(model, tokenizer, cfg, progress=progress)
        meta = {**_metadata(cfg), "budget": name, "seconds": round(history["seconds"], 1),
                "final_loss": float(sum(history["loss"][-10:]) / len(history["loss"][-10:])),
                "torch": torch.__version__}
        save_weights(model, path, meta)
        atomic_write_json(path.with_suffix(".json"), {**meta, "loss": history["loss"]})
        if progress:
            print(f"glad-tiny: pretrained in {history['seconds']:.0f} s (loss {meta['final_loss']:.3f}), "
                  f"saved to {path}", file=sys.stderr, flush=True)
    return path


def save_weights(model, path: str | os.PathLike, metadata: dict) -> None:
    """Write `model`'s weights as safetensors with `metadata` (JSON) in the header, atomically."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata={"glad": json.dumps(metadata, sort_keys=True)}))


def _load_state(model, path: str) -> None:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} is not a glad-tiny checkpoint: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}; pass pretrained='{PRETRAINED_TAG}' "
                         f"for the built-in weights or None for random ones")


def load_glad_tiny(pretrained: str | None = PRETRAINED_TAG, cache_dir=None, device=None, *,
                   budget: str | PretrainConfig | None = None, progress: bool = True):
    """glad-tiny as ``(model, preprocess_train, preprocess_val, tokenizer)``, like open_clip.

    Args:
        pretrained: ``"glad-world"`` (built-in weights: pretrained on first use, then
            cached), None / ``"none"`` (random init), or a path to a weights file.
        cache_dir: cache folder (default ``$GLAD_CACHE`` or ``~/.cache/glad``).
        device: where the model goes (default CUDA if available, else CPU).
        budget: pretraining budget, ``"default"`` (a few minutes on 2 CPU cores) or
            ``"test"`` (seconds; for tests), default ``$GLAD_TINY_BUDGET`` or ``"default"``.
        progress: show the pretraining progress bar.
    """
    import open_clip

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = create_model("cpu")
    pretrained = weights_or_none(pretrained)
    if pretrained == PRETRAINED_TAG:
        _load_state(model, str(ensure_pretrained(budget, cache_dir, progress=progress)))
    elif pretrained is not None:
        if not os.path.isfile(pretrained):
            raise FileNotFoundError(f"glad-tiny weights {pretrained!r} not found; pass "
                                    f"pretrained='{PRETRAINED_TAG}' (built in, made on first use), "
                                    f"None (random init) or the path of a weights file")
        _load_state(model, os.fspath(pretrained))
    model = model.to(device).eval()
    size = MODEL_CONFIG["vision_cfg"]["image_size"]
    preprocess_train = open_clip.image_transform(size, is_train=True)
    preprocess_val = open_clip.image_transform(size, is_train=False)
    return model, preprocess_train, preprocess_val, tokenizer


__all__ = ["MODEL_CONFIG", "MODEL_NAME", "PRETRAINED_TAG", "checkpoint_path", "create_model",
           "ensure_pretrained", "is_fresh", "load_glad_tiny", "read_metadata", "register_model_config",
           "save_weights"]
