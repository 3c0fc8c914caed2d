"""Zero-shot accuracy of glad-tiny on every built-in dataset of the world, against chance.

For each base-to-novel dataset: accuracy on the base classes (classifier over the base
names only) and on the novel classes (over the novel names only), as the protocol
scores them, plus all classes together; for the cross-dataset and
domain-generalisation targets: all classes. Each number sits beside chance (1 / the
number of classes it chooses among) and the ratio.

Pretraining happens first if the cache holds no fresh glad-tiny of the chosen budget;
its time is reported (from the checkpoint's metadata when it was cached already).

Usage: python benchmarks/world_zeroshot.py [--budget default|test] [--split test]
       [--threads 2] [--out benchmarks/results/world_zeroshot.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch
from PIL import Image


def _features(model, preprocess, items, batch=256):
    feats = []
    with torch.no_grad():
        for i in range(0, len(items), batch):
            x = torch.stack([preprocess(Image.open(d.impath).convert("RGB")) for d in items[i:i + batch]])
            feats.append(model.encode_image(x, normalize=True))
    return torch.cat(feats)


def _accuracy(model, tokenizer, preprocess, dataset, split):
    items = getattr(dataset, split)
    if not items:
        return float("nan")
    with torch.no_grad():
        text = model.encode_text(tokenizer(dataset.prompts()), normalize=True)
    image = _features(model, preprocess, items)
    pred = (image @ text.T).argmax(1)
    labels = torch.tensor([d.label for d in items])
    return (pred == labels).float().mean().item()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", default="default", help="glad-tiny pretraining budget (default|test)")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from glad.data import build_dataset, subsample_classes
    from glad.world import BUILTIN_PROTOCOLS
    from glad.world.pretrain import BUDGETS
    from glad.world.tiny import checkpoint_path, is_fresh, load_glad_tiny, read_metadata

    path = checkpoint_path(args.budget)
    cached = is_fresh(path, BUDGETS[args.budget])
    t0 = time.perf_counter()
    model, _, preprocess, tokenizer = load_glad_tiny(budget=args.budget, device="cpu")
    load_s = time.perf_counter() - t0
    meta = read_metadata(path) or {}
    print(f"glad-tiny ({args.budget} budget): pretraining {meta.get('seconds', float('nan')):.0f} s "
          f"({'cached' if cached else f'just now; {load_s:.0f} s with loading'}), "
          f"final loss {meta.get('final_loss', float('nan')):.3f}, torch threads {torch.get_num_threads()}")

    rows = []

    def add(protocol, name, subset, acc, n_classes):
        chance = 1.0 / n_classes
        rows.append({"protocol": protocol, "dataset": name, "classes": subset, "n_classes": n_classes,
                     "accuracy": acc, "chance": chance, "x_chance": acc / chance})

    for name in BUILTIN_PROTOCOLS["base-to-novel"]["datasets"]:
        ds = build_dataset(name)
        for subset in ("base", "novel"):
            part = subsample_classes(ds, subset)
            add("base-to-novel", name, subset, _accuracy(model, tokenizer, preprocess, part, args.split),
                part.num_classes)
        add("base-to-novel", name, "all", _accuracy(model, tokenizer, preprocess, ds, args.split), ds.num_classes)
    for protocol in ("cross-dataset", "domain-generalization"):
        spec = BUILTIN_PROTOCOLS[protocol]
        for name in [spec["source"], *spec["targets"]]:
            if protocol == "domain-generalization" and name == spec["source"]:
                continue  # the same source as cross-dataset: printed once
            ds = build_dataset(name)
            add(protocol, name, "all", _accuracy(model, tokenizer, preprocess, ds, args.split), ds.num_classes)

    print("\n| protocol | dataset | classes | n | zero-shot acc | chance | x chance |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['protocol']} | {r['dataset']} | {r['classes']} | {r['n_classes']} | "
              f"{100 * r['accuracy']:.1f} | {100 * r['chance']:.1f} | {r['x_chance']:.1f} |")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"budget": args.budget, "split": args.split, "pretrain": meta,
                       "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                   "torch": torch.__version__, "threads": torch.get_num_threads()},
                       "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
