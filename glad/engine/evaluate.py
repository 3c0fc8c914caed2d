"""Top-1 accuracy of a GladModel on a list of items, with LoRA merged for speed."""

from __future__ import annotations

import contextlib

import torch
from torch.utils.data import DataLoader

from glad.data import ImageDataset, format_prompt
from glad.data.decoded import normalize
from glad.engine.runtime import Runtime
from glad.models import merge_lora, unmerge_lora


@contextlib.contextmanager
def merged_adapters(model):
    """Run the block with `model`'s LoRA folded into the weights (a no-op without LoRA)."""
    if model.lora_config is None:
        yield
        return
    merge_lora(model.clip)
    try:
        yield
    finally:
        unmerge_lora(model.clip)


@torch.no_grad()
def class_text_features(model, classnames, template, runtime: Runtime, chunk: int = 256) -> torch.Tensor:
    """Normalised text features of every class prompt, encoded in chunks of `chunk` classes."""
    prompts = [format_prompt(template, c) for c in classnames]
    feats = []
    for i in range(0, len(prompts), chunk):
        tokens = model.tokenize(prompts[i:i + chunk]).to(runtime.device)
        with runtime.eval_autocast():
            feats.append(model.encode_text(tokens).float())
    return torch.cat(feats)


@torch.no_grad()
def predict(model, images, text_features, runtime: Runtime) -> torch.Tensor:
    """Predicted class index of each image against `text_features` (no host sync)."""
    images = images.to(runtime.device, non_blocking=True)
    with runtime.eval_autocast():
        feats = model.encode_image(images)
        logits = model.logits(feats.float(), text_features)
    return logits.argmax(dim=1)


@torch.no_grad()
def evaluate(model, items, classnames, template, transform, runtime: Runtime,
             batch_size: int = 128, workers: int = 4, stop_flag=None, prepared=None) -> dict:
    """{'accuracy': top-1 in percent, 'num_samples': n}. When `stop_flag()` turns true the pass
    ends early with `glad.engine.train.StopRequested` (the evaluation is redone on resume).

    `prepared` (glad.data.decoded.PreparedTestImages of `items`) replaces decoding the files:
    the same pixels, normalised by the same float ops, so the same accuracy bit for bit."""
    if not items:
        raise ValueError("nothing to evaluate: the test split is empty")
    model.eval()
    if prepared is not None:
        loader = ((normalize(pixels), labels) for pixels, labels in prepared.batches(batch_size))
    else:
        loader = DataLoader(ImageDataset(items, transform), batch_size=batch_size, shuffle=False,
                            num_workers=workers, pin_memory=runtime.device.type == "cuda")
    correct = torch.zeros((), dtype=torch.long, device=runtime.device)
    with merged_adapters(model):
        text = class_text_features(model, classnames, template, runtime)
        for images, labels in loader:
            if stop_flag is not None and stop_flag():
                from glad.engine.train import StopRequested

                raise StopRequested("stopped during an evaluation")
            labels = labels.to(runtime.device, non_blocking=True)
            correct += (predict(model, images, text, runtime) == labels).sum()
    return {"accuracy": 100.0 * correct.item() / len(items), "num_samples": len(items)}
