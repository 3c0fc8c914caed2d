"""Contrastive pretraining of glad-tiny on captioned pictures of the world.

CLIP's InfoNCE with a learnable temperature, with one twist the world makes
possible: a caption's positives are every picture of the batch it is true of
(`captions.match_matrix`), not only its own, so "a red object" is not pushed
away from the other red pictures of the batch.

Pictures come from the "pretrain" random stream, which no evaluation split
ever draws from.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from glad.world.captions import caption, match_matrix
from glad.world.render import render
from glad.world.scenes import pretraining_scene, rng_for

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PretrainConfig:
    """How glad-tiny is pretrained. Saved in the checkpoint; a change rebuilds the cache."""

    steps: int = 400
    batch_size: int = 256
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup: int = 40
    weight_decay: float = 0.1
    pool: int = 16384  # distinct pictures; later steps reuse them with fresh captions
    seed: int = 0
    threads: int | None = None  # None: leave torch's setting; not part of the cache key
    image_size: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


BUDGETS: dict[str, PretrainConfig] = {
    "default": PretrainConfig(),
    # a few seconds: enough to test the machinery, not to learn the world
    "test": PretrainConfig(steps=6, batch_size=32, pool=128, warmup=2, lr=3e-3, threads=1),
}


def _lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


class _Pictures:
    """The pool of pretraining pictures, rendered on first use."""

    def __init__(self, cfg: PretrainConfig):
        self.cfg = cfg
        s = cfg.image_size
        self.pixels = torch.empty((cfg.pool, 3, s, s), dtype=torch.uint8)
        self.scenes: list = [None] * cfg.pool
        mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1) * 255
        std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1) * 255
        self.mean, self.std = mean, std

    def get(self, index: int):
        if self.scenes[index] is None:
            rng = rng_for(self.cfg.seed, "pretrain", index)
            scene = pretraining_scene(rng)
            self.pixels[index] = torch.from_numpy(render(scene, rng, self.cfg.image_size)).permute(2, 0, 1)
            self.scenes[index] = scene
        return self.scenes[index]

    def batch(self, indices: list[int], flips: torch.Tensor) -> torch.Tensor:
        x = self.pixels[indices].float()
        x = torch.where(flips.view(-1, 1, 1, 1), x.flip(-1), x)
        return (x - self.mean) / self.std


def contrastive_loss(image_features, text_features, logit_scale, positives: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE whose targets spread evenly over all true (picture, caption) pairs."""
    logits = logit_scale.exp() * image_features @ text_features.T
    pos = positives.float()
    i2t = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
    t2i = -(pos / pos.sum(0, keepdim=True) * F.log_softmax(logits, 0)).sum(0).mean()
    return (i2t + t2i) / 2


def pretrain(model, tokenizer, cfg: PretrainConfig, *, progress: bool = True) -> dict:
    """Train `model` (an open_clip CLIP) in place; returns {"loss": [...], "seconds": float}."""
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _pretrain(model, tokenizer, cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _pretrain(model, tokenizer, cfg: PretrainConfig, progress: bool) -> dict:
    torch.manual_seed(cfg.seed)
    model.train()
    emb = model.token_embedding
    # The 49k-row token table would dominate a dense Adam step; only the world's few
    # dozen words ever get a gradient, so it trains sparsely.
    emb.sparse = True
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and p is not emb.weight]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    opt_emb = torch.optim.SparseAdam([emb.weight], lr=cfg.lr, betas=(0.9, 0.98))
    pictures = _Pictures(cfg)
    orders: dict[int, list[int]] = {}

    def order(sample: int) -> int:
        """The picture of the `sample`-th draw: each pass over the pool in a new order."""
        epoch, pos = divmod(sample, cfg.pool)
        if epoch not in orders:
            orders.clear()
            g = torch.Generator().manual_seed(cfg.seed * 1000003 + epoch)
            orders[epoch] = torch.randperm(cfg.pool, generator=g).tolist()
        return orders[epoch][pos]

    token_cache: dict[str, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    bar = None
    if progress:
        from glad.progress import Progress

        bar = Progress(cfg.steps, "pretraining glad-tiny")
    start = time.perf_counter()
    try:
        for step in range(cfg.steps):
            lr = _lr_at(step, cfg)
            for group in opt.param_groups + opt_emb.param_groups:
                group["lr"] = lr
            first = step * cfg.batch_size
            indices = [order(first + b) for b in range(cfg.batch_size)]
            scenes = [pictures.get(i) for i in indices]
            caps = [caption(s, rng_for(cfg.seed, "pretrain-caption", first + b)) for b, s in enumerate(scenes)]
            missing = [c.text for c in caps if c.text not in token_cache]
            if missing:
                for text, tok in zip(missing, tokenizer(missing), strict=True):
                    token_cache[text] = tok
            tokens = torch.stack([token_cache[c.text] for c in caps])
            images = pictures.batch(indices, torch.rand(cfg.batch_size, generator=gen) < 0.5)
            positives = match_matrix(scenes, caps)

            image_features = model.encode_image(images, normalize=True)
            text_features = model.encode_text(tokens, normalize=True)
            loss = contrastive_loss(image_features, text_features, model.logit_scale, positives)
            opt.zero_grad(set_to_none=True)
            opt_emb.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decay + no_decay, 1.0)
            opt.step()
            opt_emb.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    finally:
        if bar is not None:
            bar.close()
        emb.sparse = False
    model.eval()
    return {"loss": losses, "seconds": time.perf_counter() - start}
