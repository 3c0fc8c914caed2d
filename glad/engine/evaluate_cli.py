"""`glad eval`: a saved adapter (or zero-shot CLIP) on any dataset, no training involved."""

from __future__ import annotations

from glad.data import build_dataset, subsample_classes, test_transform
from glad.engine.evaluate import evaluate
from glad.engine.runtime import setup_runtime
from glad.models import GladModel, LoraConfig, load_adapter, read_adapter_config
from glad.models.loading import load_base_clip


def evaluate_adapter(adapter: str | None, datasets: list[str], split: str = "all", data_root: str = "data",
                     model: str | None = None, pretrained: str | None = None, cache_dir: str | None = None,
                     offline: bool = False, batch_size: int = 128, workers: int = 4, device: str = "auto",
                     precision: str = "auto") -> list[dict]:
    """Top-1 accuracy of the adapter's model on each dataset's test split (`split` classes)."""
    config = read_adapter_config(adapter) if adapter else {}
    model_name = model or config.get("base_model_name_or_path") or "ViT-B-16"
    weights = pretrained if pretrained is not None else config.get("pretrained", "openai")
    if isinstance(weights, str) and weights.lower() == "none":
        weights = None
    runtime = setup_runtime(device, eval_precision=precision)
    data = [build_dataset(name, data_root) for name in datasets]  # fail on missing data before loading weights
    # The activation the adapter was trained with (older adapters: decided from the weights).
    clip, _, _, tokenizer = load_base_clip(model_name, weights, cache_dir=cache_dir, device=runtime.device,
                                           offline=offline, quick_gelu=config.get("quick_gelu"))
    lora = LoraConfig.from_dict(config["lora"]) if config.get("lora") else None
    net = GladModel(clip, tokenizer, lora=lora, use_alignnet=bool(config.get("alignnet")),
                    model_name=model_name, pretrained=weights).to(runtime.device)
    if adapter:
        load_adapter(net, adapter)
    size = clip.visual.image_size
    transform = test_transform(size[0] if isinstance(size, (tuple, list)) else int(size))
    results = []
    for name, ds in zip(datasets, data, strict=True):
        part = ds if split == "all" else subsample_classes(ds, split)
        res = evaluate(net, part.test, part.classnames, part.template, transform, runtime,
                       batch_size=batch_size, workers=workers)
        results.append({"dataset": name, "split": split, "eval_precision": runtime.eval_precision, **res})
    return results
