"""`glad eval`: a saved adapter (or zero-shot CLIP) on any dataset, no training involved."""

from __future__ import annotations

from glad.config import weights_or_none
from glad.data import build_dataset, subsample_classes
from glad.engine.evaluate import evaluate
from glad.engine.runtime import setup_runtime
from glad.models import GladModel
from glad.models.loading import load_base_clip


def evaluate_adapter(adapter: str | None, datasets: list[str], split: str = "all", data_root: str = "data",
                     model: str | None = None, pretrained: str | None = None, cache_dir: str | None = None,
                     offline: bool = False, batch_size: int = 128, workers: int = 4, device: str = "auto",
                     precision: str = "auto", template: str | None = None, tokenizer: str | None = None) -> list[dict]:
    """Top-1 accuracy of the adapter's model on each dataset's test split (`split` classes).

    `adapter`: a folder written by glad train, `hf-hub:user/name`, or None for zero-shot CLIP.
    The prompt is `template`, else the `--template` the adapter was trained with, else each
    dataset's own (CoOp's); the activation is the one the adapter was trained with.
    """
    from glad.engine.defaults import use_builtin_datasets
    from glad.engine.use import load_tuned

    use_builtin_datasets()
    runtime = setup_runtime(device, eval_precision=precision)
    data = [build_dataset(name, data_root) for name in datasets]  # fail on missing data before loading weights
    config = {}
    if adapter:
        net, config, _ = load_tuned(adapter, device=runtime.device, cache_dir=cache_dir, offline=offline,
                                    model=model, pretrained=pretrained, tokenizer=tokenizer)
    else:
        weights = "openai" if pretrained is None else weights_or_none(pretrained)
        name = model or "ViT-B-16"
        clip, _, _, tok = load_base_clip(name, weights, cache_dir=cache_dir, device=runtime.device,
                                         offline=offline, tokenizer=tokenizer)
        net = GladModel(clip, tok, lora=None, use_alignnet=False, model_name=name, tokenizer_path=tokenizer,
                        pretrained=weights).to(runtime.device)
    transform = net.preprocess.test_transform()
    results = []
    with runtime.numerics():
        for name, ds in zip(datasets, data, strict=True):
            part = ds if split == "all" else subsample_classes(ds, split)
            prompt = template or config.get("template_override") or part.template
            res = evaluate(net, part.test, part.classnames, prompt, transform, runtime,
                           batch_size=batch_size, workers=workers)
            results.append({"dataset": name, "split": split, "template": prompt,
                            "eval_precision": runtime.eval_precision, **res})
    return results
