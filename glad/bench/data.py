"""`glad bench data`: images/s the loaders deliver against images/s the model consumes.

On generated JPEGs of realistic sizes (quality 90), for each worker count:
  * train, every epoch: decode + CoOp's augmentation each epoch (what glad did before);
  * train, decoded once: the one-time decode, then augmentation only (what it does now);
  * eval, streamed: decode + resize + crop + normalise per pass;
  * eval, prepared: the one-time decode + crop, then normalisation only, per pass.
Beside them, the GLAD training step (teacher pass + two forward/backward passes) and the
merged evaluation forward, in images/s on the device, so a user sees which one bounds a run.
Loader rates are wall time (workers run in parallel); each is the best of `rounds`.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

import torch

from glad.bench import backbone
from glad.bench import report as reports
from glad.bench.timing import resolve_device, sync

SIZES = ((500, 375), (1024, 768))


@dataclass
class Config:
    """Settings of `glad bench data` (CLI flags map one-to-one)."""

    sizes: tuple[tuple[int, int], ...] = SIZES
    images: int = 96           # per JPEG size (16 shots x 6 classes)
    classes: int = 6
    workers: tuple[int, ...] = (0, 2)
    epochs: int = 2            # per timed loader pass
    batch_size: int = 32
    image_size: int = 224
    rounds: int = 2
    models: tuple[str, ...] = ("glad-tiny", "ViT-B-16")
    model_batch: int = 8
    device: str = "auto"
    threads: int | None = None
    folder: str | None = None  # where the JPEGs are written (default: a temporary folder)


def write_jpegs(folder: str, size: tuple[int, int], images: int, classes: int) -> list:
    """`images` JPEGs of `size` (quality 90) in class folders; smooth colour fields with noise,
    so they compress like photographs rather than like noise or flat colour."""
    import numpy as np
    from PIL import Image

    from glad.data import Datum

    rng = np.random.default_rng(0)
    w, h = size
    items = []
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(images):
        label = i % classes
        path = os.path.join(folder, f"{w}x{h}", f"class_{label}", f"{i:04d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        a, b, c = rng.uniform(0.002, 0.02, 3)
        base = np.stack([np.sin(xx * a + i), np.cos(yy * b + label), np.sin((xx + yy) * c)], -1)
        pixels = np.clip(127 + 100 * base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=90)
        items.append(Datum(path, label, f"class_{label}"))
    return items


def _rate(n_images: int, fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n_images / best


def _drain(loader, epochs: int, sampler=None):
    for epoch in range(epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for _ in loader:
            pass


def loader_rates(items, cfg: Config, workers: int) -> dict:
    from torch.utils.data import DataLoader

    from glad.config import TrainConfig
    from glad.data import ImageDataset, test_transform, train_transform
    from glad.data.decoded import PreparedTestImages
    from glad.engine.runtime import Runtime
    from glad.engine.train import make_train_loader

    runtime = Runtime(device=torch.device("cpu"))
    transform = train_transform(cfg.image_size)
    n = len(items)
    out = {"workers": workers}
    for key, gb in (("train_every_epoch", 0.0), ("train_decoded_once", 64.0)):
        train_cfg = TrainConfig(batch_size=cfg.batch_size, image_cache_gb=gb)
        start = time.perf_counter()
        loader, sampler = make_train_loader(items, transform, train_cfg, 1, runtime, workers)
        setup = time.perf_counter() - start  # the one-time decode, when decoded once
        out[key] = _rate(n * cfg.epochs, lambda loader=loader, sampler=sampler: _drain(loader, cfg.epochs, sampler),
                         cfg.rounds)
        out[f"{key}_setup_s"] = round(setup, 3)
    stream = DataLoader(ImageDataset(items, test_transform(cfg.image_size)), batch_size=cfg.batch_size,
                        num_workers=workers)
    out["eval_streamed"] = _rate(n, lambda: _drain(stream, 1), cfg.rounds)
    start = time.perf_counter()
    prepared = PreparedTestImages(items, cfg.image_size, workers=workers)
    out["eval_prepared_setup_s"] = round(time.perf_counter() - start, 3)
    out["eval_prepared"] = _rate(n, lambda: list(prepared.normalized_batches(cfg.batch_size)), cfg.rounds)
    for key in ("train_every_epoch", "train_decoded_once", "eval_streamed", "eval_prepared"):
        out[f"{key}_per_worker"] = out[key] / max(1, workers)
    return {k: round(v, 1) if isinstance(v, float) and not k.endswith("_s") else v for k, v in out.items()}


def model_rates(name: str, cfg: Config, device: torch.device) -> dict:
    """GLAD training step and merged evaluation forward, images/s on `device`."""
    from glad.config import METHODS, TrainConfig
    from glad.engine.runtime import Runtime
    from glad.engine.train import make_optimizer, train_step
    from glad.models import GladModel

    clip, tokenizer, size = backbone.load_backbone(name, None, device)
    model = GladModel(clip, tokenizer, lora=backbone.lora_config(), use_alignnet=True, model_name=name).to(device)
    model.train()
    images, labels, classnames = backbone.random_batch(cfg.model_batch, cfg.classes, size, 0, device)
    tokens = model.tokenize([backbone.TEMPLATE.format(c) for c in classnames]).to(device)
    runtime = Runtime(device=device)
    optimizer = make_optimizer(model.trainable_parameters(), METHODS["glad"], TrainConfig(), model)

    def step():
        train_step(model, model, optimizer, images, labels, tokens, 1.0, runtime)
        sync(device)

    step()  # warm
    train_rate = _rate(cfg.model_batch, step, cfg.rounds)
    model.eval()
    with torch.no_grad(), model.merged():
        def forward():
            model.encode_image(images)
            sync(device)
        forward()
        eval_rate = _rate(cfg.model_batch, forward, cfg.rounds)
    return {"model": name, "image_size": size, "batch": cfg.model_batch, "train_step": round(train_rate, 1),
            "eval_forward": round(eval_rate, 1)}


def run(cfg: Config, progress=None, command: str | None = None) -> dict:
    say = progress or (lambda _msg: None)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    report = reports.start("data", cfg, device, "wall", command)
    report["config"]["unit"] = "images/s (best of rounds)"
    loaders = []
    with tempfile.TemporaryDirectory(dir=cfg.folder) as folder:
        for size in cfg.sizes:
            items = write_jpegs(folder, size, cfg.images, cfg.classes)
            for workers in cfg.workers:
                say(f"loaders: {size[0]}x{size[1]} JPEGs, {workers} worker(s)")
                loaders.append({"jpeg": f"{size[0]}x{size[1]}", **loader_rates(items, cfg, workers)})
    models = []
    for name in cfg.models:
        say(f"model: {name} on {device}")
        models.append(model_rates(name, cfg, device))
    return reports.finish(report, loaders=loaders, models=models)


def table(report: dict) -> str:
    cfg = report["config"]
    title = (f"loaders' images/s beside the model's, best of {cfg['rounds']} rounds; loaders over "
             f"{cfg['epochs']} epochs (train) or one pass (eval)")
    lines = [*reports.header(report, title),
             "| JPEG | workers | train, decode every epoch | train, decoded once | eval, streamed | "
             "eval, prepared | one-time decode (train / eval) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["loaders"]:
        lines.append(f"| {r['jpeg']} | {r['workers']} | {r['train_every_epoch']:.0f} | "
                     f"{r['train_decoded_once']:.0f} | {r['eval_streamed']:.0f} | {r['eval_prepared']:.0f} | "
                     f"{r['train_decoded_once_setup_s']:.2f} s / {r['eval_prepared_setup_s']:.2f} s |")
    lines += ["", "| model | image size | GLAD train step | merged eval forward |", "|---|---:|---:|---:|"]
    for m in report["models"]:
        lines.append(f"| {m['model']} | {m['image_size']} | {m['train_step']:.1f} | {m['eval_forward']:.1f} |")
    return "\n".join(lines)
