"""Using a tuned model: classify new images (`Classifier`, `glad predict`) and adapters by
Hugging Face Hub id (writing it for other tools: glad.engine.export).

    clf = Classifier("runs/b2n/glad/dtd-base/seed1/adapter")      # or "hf-hub:user/name"
    clf.predict(["a.jpg", "b.png"], top_k=3)   # [[("banded", 0.91), ...], ...]

The classifier holds the base model with LoRA merged into its weights and the class text
features computed once; AlignNet, which depends on each image, stays a module of its own.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from glad.config import weights_or_none
from glad.data.readers import IMAGE_EXTENSIONS
from glad.data.transforms import Preprocess
from glad.models import (
    AdapterMismatchError,
    GladModel,
    LoraConfig,
    WeightsUnavailableError,
    load_adapter,
    read_adapter_config,
)
from glad.models.adapter_io import SIDECAR_NAME
from glad.models.loading import (
    hub_offline,
    load_base_clip,
    offline_enabled,
    offline_unless_reachable,
)

HUB_PREFIX = "hf-hub:"
ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors", SIDECAR_NAME]


def resolve_adapter(adapter: str, cache_dir: str | None = None, offline: bool = False) -> str:
    """A local adapter folder for `adapter`: the folder itself, or `hf-hub:user/name[@revision]`
    fetched into (or read offline from) the Hugging Face cache."""
    if not adapter.startswith(HUB_PREFIX):
        if not os.path.isdir(adapter):
            raise FileNotFoundError(f"adapter folder {adapter!r} does not exist; pass a folder written by "
                                    f"glad train (…/seedK/adapter) or hf-hub:user/name")
        return adapter
    with hub_offline(offline):
        return _download_adapter(adapter, cache_dir)


def _download_adapter(adapter: str, cache_dir: str | None) -> str:
    offline_unless_reachable()
    repo, _, revision = adapter[len(HUB_PREFIX):].partition("@")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id=repo, revision=revision or None, cache_dir=cache_dir,
                                 allow_patterns=ADAPTER_FILES)
    except Exception as e:  # noqa: BLE001 - the hub raises many types; one message for all
        state = "on (HF_HUB_OFFLINE=1: only the cache is read)" if offline_enabled() else "off"
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise WeightsUnavailableError(
            f"could not get adapter {adapter!r}; offline mode: {state}; cause: {type(e).__name__}: {first}; "
            f"download it once online, or pass the adapter folder itself (--adapter path/to/adapter)") from None


def load_tuned(adapter: str, *, device=None, cache_dir: str | None = None, offline: bool = False,
               model: str | None = None, pretrained: str | None = None, tokenizer: str | None = None):
    """(GladModel with the adapter loaded, its adapter config, the local adapter folder)."""
    folder = resolve_adapter(adapter, cache_dir=cache_dir, offline=offline)
    config = read_adapter_config(folder)
    name = model or config.get("base_model_name_or_path") or "ViT-B-16"
    weights = weights_or_none(pretrained if pretrained is not None else config.get("pretrained", "openai"))
    tokenizer_path = tokenizer or config.get("tokenizer")
    clip, _, _, tok = load_base_clip(name, weights, cache_dir=cache_dir, device=device, offline=offline,
                                     quick_gelu=config.get("quick_gelu"), tokenizer=tokenizer_path)
    lora = LoraConfig.from_dict(config["lora"]) if config.get("lora") else None
    # the preprocessing the adapter was trained with (older adapters: the model's own)
    preprocess = Preprocess.from_dict(config["preprocess"]) if config.get("preprocess") else None
    recorded = config.get("base_model_name_or_path")
    try:
        net = GladModel(clip, tok, lora=lora, use_alignnet=bool(config.get("alignnet")), model_name=name,
                        pretrained=weights, preprocess=preprocess, tokenizer_path=tokenizer_path)
        net = net.to(clip.logit_scale.device)
        load_adapter(net, folder)
    except (ValueError, RuntimeError) as e:
        if model is None or model == recorded:
            raise
        # another base model than the adapter's: say so, not which tensor happened to differ
        raise AdapterMismatchError(f"the adapter in {folder} was trained on {recorded!r} and does not fit "
                                   f"--model {model!r} ({str(e).splitlines()[0][:200]}); pass --model {recorded} "
                                   "or leave --model out") from None
    return net, config, folder


def expand_images(paths: Sequence[str]) -> list[str]:
    """Files, folders (every image below them, sorted) and glob patterns, in the order given."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            found = [os.path.join(root, f) for root, _, files in os.walk(p) for f in files
                     if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
            out += sorted(found)
        elif any(c in p for c in "*?[") and not os.path.exists(p):
            out += sorted(glob.glob(p, recursive=True))
        else:
            out.append(p)
    return list(dict.fromkeys(out))


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class, probability), best first; empty when `error`
    error: str | None = None


class Classifier:
    """A tuned model ready to classify: LoRA merged, class text features computed once."""

    def __init__(self, adapter: str, classes: Sequence[str] | None = None, *, template: str | None = None,
                 device: str = "auto", precision: str = "auto", cache_dir: str | None = None,
                 offline: bool = False, model: str | None = None, pretrained: str | None = None):
        from glad.engine.evaluate import class_text_features
        from glad.engine.runtime import setup_runtime
        from glad.models import merge_lora

        self.runtime = setup_runtime(device, eval_precision=precision)
        self.model, self.config, self.folder = load_tuned(adapter, device=self.runtime.device, cache_dir=cache_dir,
                                                          offline=offline, model=model, pretrained=pretrained)
        self.classes = list(classes) if classes else self.config.get("classnames")
        if not self.classes:
            raise ValueError(f"the adapter in {self.folder} records no class names (trained before glad "
                             f"recorded them); pass --classes FILE (one class name a line)")
        self.template = template or self.config.get("template") or "a photo of a {}."
        self.model.eval()
        if self.model.lora_config is not None:
            merge_lora(self.model.clip)  # for good: this model only classifies
        self.text = class_text_features(self.model, self.classes, self.template, self.runtime)
        self.transform = self.model.preprocess.test_transform()

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C] class probabilities of a batch of transformed images."""
        from glad.engine.evaluate import class_logits

        return class_logits(self.model, images, self.text, self.runtime).softmax(dim=-1)

    def predict(self, paths: Sequence[str], top_k: int = 5, batch_size: int = 64) -> list[Prediction]:
        """Top-k classes of each image file; an unreadable file gets its error, the rest go on."""
        from glad.data import DatasetError, load_image

        k = max(1, min(top_k, len(self.classes)))
        results: list[Prediction | None] = [None] * len(paths)
        batch, where = [], []

        def flush():
            if not batch:
                return
            probs = self.probabilities(torch.stack(batch))
            values, indices = probs.topk(k, dim=-1)
            for row, i in enumerate(where):
                results[i] = Prediction(paths[i], [(self.classes[j], round(float(v), 6)) for v, j in
                                                   zip(values[row].tolist(), indices[row].tolist(), strict=True)])
            batch.clear()
            where.clear()

        for i, path in enumerate(paths):
            try:
                batch.append(self.transform(load_image(path)))
                where.append(i)
            except (DatasetError, OSError) as e:
                results[i] = Prediction(path, [], " ".join(str(e).split()))
            if len(batch) >= batch_size:
                flush()
        flush()
        return results


def predict(adapter: str, images: Sequence[str], top_k: int = 5, **kwargs) -> list[Prediction]:
    """`Classifier(adapter, **kwargs).predict(expand_images(images), top_k)`."""
    return Classifier(adapter, **kwargs).predict(expand_images(images), top_k=top_k)


def write_predictions(predictions: list[Prediction], path: str) -> None:
    """CSV (path, rank, class, probability, error) or JSON, by the file's extension, atomically."""
    import csv
    import io

    from glad.io import atomic_write_text

    if path.lower().endswith(".json"):
        data = [{"path": p.path, "top": [{"class": c, "probability": v} for c, v in p.top], "error": p.error}
                for p in predictions]
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        return
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["path", "rank", "class", "probability", "error"])
    for p in predictions:
        if p.error:
            writer.writerow([p.path, "", "", "", p.error])
        for rank, (c, v) in enumerate(p.top, start=1):
            writer.writerow([p.path, rank, c, f"{v:.6f}", ""])
    atomic_write_text(path, out.getvalue())
