"""Top-1 accuracy of a GladModel on a list of items, with LoRA merged for speed."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from glad.data import ImageDataset, format_prompt
from glad.engine.runtime import Runtime


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
def class_logits(model, images, text_features, runtime: Runtime) -> torch.Tensor:
    """[B, C] logits of a batch of transformed images against `text_features` (no host sync):
    the one scoring path of evaluation and of `Classifier`."""
    images = images.to(runtime.device, non_blocking=True)
    with runtime.eval_autocast():
        feats = model.encode_image(images)
        return model.logits(feats.float(), text_features).float()


def shard(items, runtime: Runtime):
    """This rank's share of `items`: every world_size-th from its rank, so the shards of all
    ranks cover every item exactly once, also when the count does not divide."""
    return items[runtime.rank::runtime.world_size]


@torch.no_grad()
def evaluate(model, items, classnames, template, transform, runtime: Runtime,
             batch_size: int = 128, workers: int = 4, stop_flag=None, prepared=None) -> dict:
    """{'accuracy': top-1 in percent, 'num_samples': n, 'shard_sizes': per rank}.

    Under torchrun every rank evaluates its `shard` of `items` and the correct counts are
    summed over ranks, so N ranks share one pass and give one process's result. When
    `stop_flag()` turns true the pass ends early with `glad.engine.train.StopRequested` (the
    evaluation is redone on resume). `prepared` (glad.data.decoded.PreparedTestImages of this
    rank's shard) replaces decoding the files: the same pixels, normalised by the same float
    ops, so the same accuracy bit for bit."""
    if not items:
        raise ValueError("nothing to evaluate: the test split is empty")
    model.eval()
    mine = shard(items, runtime)
    if prepared is not None:
        if len(prepared) != len(mine):
            raise ValueError(f"prepared images hold {len(prepared)} items, this rank's shard {len(mine)}")
        loader = prepared.normalized_batches(batch_size)
    else:
        loader = DataLoader(ImageDataset(mine, transform), batch_size=batch_size, shuffle=False,
                            num_workers=workers, pin_memory=runtime.device.type == "cuda")
    counts = torch.zeros(2, dtype=torch.long, device=runtime.device)  # correct, seen
    with model.merged():
        text = class_text_features(model, classnames, template, runtime)
        for images, labels in loader if mine else ():
            if stop_flag is not None and stop_flag():
                from glad.engine.train import StopRequested

                raise StopRequested("stopped during an evaluation")
            labels = labels.to(runtime.device, non_blocking=True)
            counts[0] += (class_logits(model, images, text, runtime).argmax(dim=1) == labels).sum()
            counts[1] += labels.numel()
    sizes = [len(mine)]
    if runtime.world_size > 1:
        import torch.distributed as dist

        gathered = [torch.zeros_like(counts) for _ in range(runtime.world_size)]
        dist.all_gather(gathered, counts)
        counts = torch.stack(gathered).sum(0)
        sizes = [int(c[1]) for c in gathered]
    correct, seen = (int(v) for v in counts.tolist())
    if seen != len(items):
        raise RuntimeError(f"evaluated {seen} of {len(items)} images: the shards do not cover the test set")
    return {"accuracy": 100.0 * correct / len(items), "num_samples": len(items), "shard_sizes": sizes}
