"""`glad bench world`: glad-tiny's zero-shot accuracy on every built-in dataset, against chance.

For each base-to-novel dataset: accuracy on the base classes (classifier over the base names
only) and on the novel classes (over the novel names only), as the protocol scores them, plus
all classes together; for the cross-dataset and domain-generalisation targets: all classes.
Each number sits beside chance (1 / the number of classes it chooses among) and the ratio.
Pretraining happens first if the cache holds no fresh glad-tiny of the chosen budget; its time
is reported (from the checkpoint's metadata when it was cached already).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from glad.bench import report as reports


@dataclass
class Config:
    """Settings of `glad bench world` (CLI flags map one-to-one)."""

    budget: str = "default"  # glad-tiny pretraining budget: default | test
    split: str = "test"
    threads: int | None = None


def _accuracy(model, tokenizer, preprocess, dataset, split):
    from PIL import Image

    items = getattr(dataset, split)
    if not items:
        return float("nan")
    with torch.no_grad():
        text = model.encode_text(tokenizer(dataset.prompts()), normalize=True)
        correct = 0
        for i in range(0, len(items), 256):
            batch = items[i:i + 256]
            images = torch.stack([preprocess(Image.open(d.impath).convert("RGB")) for d in batch])
            pred = (model.encode_image(images, normalize=True) @ text.T).argmax(1)
            correct += int((pred == torch.tensor([d.label for d in batch])).sum())
    return correct / len(items)


def run(cfg: Config, progress=None, command: str | None = None) -> dict:
    from glad.data import build_dataset, subsample_classes
    from glad.world import BUILTIN_PROTOCOLS
    from glad.world.pretrain import BUDGETS
    from glad.world.tiny import checkpoint_path, is_fresh, load_glad_tiny, read_metadata

    say = progress or (lambda _msg: None)
    if cfg.budget not in BUDGETS or cfg.split not in ("train", "val", "test"):
        raise ValueError(f"budget must be one of {', '.join(BUDGETS)} and split train, val or test; got "
                         f"{cfg.budget!r} and {cfg.split!r}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    report = reports.start("world", cfg, torch.device("cpu"), "wall", command)
    path = checkpoint_path(cfg.budget)
    cached = is_fresh(path, BUDGETS[cfg.budget])
    t0 = time.perf_counter()
    model, _, preprocess, tokenizer = load_glad_tiny(budget=cfg.budget, device="cpu")
    meta = read_metadata(path) or {}
    report["pretrain"] = {**meta, "cached": cached, "load_seconds": round(time.perf_counter() - t0, 2)}
    rows = []

    def add(protocol, name, subset, dataset):
        say(f"{protocol}: {name} ({subset})")
        acc = _accuracy(model, tokenizer, preprocess, dataset, cfg.split)
        chance = 1.0 / dataset.num_classes
        rows.append({"protocol": protocol, "dataset": name, "classes": subset, "n_classes": dataset.num_classes,
                     "accuracy": acc, "chance": chance, "x_chance": acc / chance})

    for name in BUILTIN_PROTOCOLS["base-to-novel"]["datasets"]:
        ds = build_dataset(name)
        for subset in ("base", "novel"):
            add("base-to-novel", name, subset, subsample_classes(ds, subset))
        add("base-to-novel", name, "all", ds)
    for protocol in ("cross-dataset", "domain-generalization"):
        spec = BUILTIN_PROTOCOLS[protocol]
        for name in [spec["source"], *spec["targets"]]:
            if protocol == "domain-generalization" and name == spec["source"]:
                continue  # the same source as cross-dataset: listed once
            add(protocol, name, "all", build_dataset(name))
    return reports.finish(report, rows=rows)


def table(report: dict) -> str:
    cfg, pre = report["config"], report["pretrain"]
    title = (f"glad-tiny ({cfg['budget']} budget) zero-shot on the {cfg['split']} split; pretraining "
             f"{pre.get('seconds', float('nan')):.0f} s ({'cached' if pre['cached'] else 'just now'}), final loss "
             f"{pre.get('final_loss', float('nan')):.3f}")
    lines = reports.header(report, title)
    lines += ["| protocol | dataset | classes | n | zero-shot acc | chance | x chance |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in report["rows"]:
        lines.append(f"| {r['protocol']} | {r['dataset']} | {r['classes']} | {r['n_classes']} | "
                     f"{100 * r['accuracy']:.1f} | {100 * r['chance']:.1f} | {r['x_chance']:.1f} |")
    return "\n".join(lines)
