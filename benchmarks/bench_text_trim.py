"""Text encoding at the prompts' length vs the full context: ViT-B-16 (random weights), CPU.

``GladModel.tokenize`` cuts the padding after the longest prompt's end token and
``GladModel.encode_text`` runs the causal text tower on that many positions only. This
times ``encode_text`` forward + backward (a weighted sum of the features, gradients to
text LoRA r = 8 on q/k/v, as in a training step) for C class prompts
"a photo of a {name}." with the cut (``trimmed``) and without it (``full``, the 77-token
context), and reports the largest feature difference between the two.

Names are 1-4 words drawn (seeded) from a fixed list, so prompt lengths vary like class
names do (the cut follows the longest). Times are the median over repeats of this
thread's CPU time with one torch thread (runs interleaved, full then trimmed), so other
processes do not count. ``--chunk K`` runs forward + backward over at most K prompts at a
time (gradients accumulate; the same work), which bounds memory: the full context at
C = 500 keeps ~25 GB of activations for backward in one piece.

Usage: python benchmarks/bench_text_trim.py [--classes 10,500] [--repeats 3] [--chunk 100] [--out FILE]
Writes JSON (default benchmarks/results/text_trim_cpu.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time

import torch

from glad.io import atomic_write_json

WORDS = ("red", "golden", "retriever", "fox", "sports", "car", "mountain", "bike", "tabby", "cat",
         "great", "white", "shark", "coffee", "mug", "steel", "arch", "bridge", "grey", "whale",
         "electric", "guitar", "water", "tower", "snow", "leopard", "paper", "towel", "ice", "cream",
         "three-toed", "soft-coated", "wire-haired", "long-horned")
clock = time.thread_time


def prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"a photo of a {' '.join(rng.choices(WORDS, k=rng.randint(1, 4)))}." for _ in range(n)]


def build(trim: bool):
    import open_clip

    from glad.models import GladModel, LoraConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clip = open_clip.create_model("ViT-B-16", pretrained=None).eval()
        model = GladModel(clip, open_clip.get_tokenizer("ViT-B-16"), lora=LoraConfig(encoders=("text",)),
                          use_alignnet=False, model_name="ViT-B-16", trim_text=trim)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
    return model


def step(model, tokens, weights, chunk):
    model.zero_grad(set_to_none=True)
    out = []
    for i in range(0, len(tokens), chunk):
        feats = model.encode_text(tokens[i:i + chunk])
        (feats * weights[i:i + chunk]).sum().backward()
        out.append(feats.detach())
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", default="10,500", help="comma-separated class counts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=100, help="prompts per forward + backward")
    ap.add_argument("--out", default="benchmarks/results/text_trim_cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    models = {"full": build(False), "trimmed": build(True)}
    rows = []
    for n in (int(c) for c in args.classes.split(",")):
        texts = prompts(n)
        tokens = {k: m.tokenize(texts) for k, m in models.items()}
        weights = torch.randn(n, 512, generator=torch.Generator().manual_seed(1))
        feats = {k: step(m, tokens[k], weights, args.chunk) for k, m in models.items()}  # warm-up
        times = {k: [] for k in models}
        for _ in range(args.repeats):
            for k, m in models.items():
                start = clock()
                step(m, tokens[k], weights, args.chunk)
                times[k].append(clock() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"classes": n, "tokens_full": tokens["full"].shape[1], "tokens_trimmed": tokens["trimmed"].shape[1],
               "full_s": med["full"], "trimmed_s": med["trimmed"], "speedup": med["full"] / med["trimmed"],
               "max_abs_diff": (feats["full"] - feats["trimmed"]).abs().max().item()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta = {"torch": torch.__version__, "machine": platform.machine(), "threads": 1, "repeats": args.repeats,
            "chunk": args.chunk, "load_before": load_before, "load_after": os.getloadavg()}
    atomic_write_json(args.out, {"meta": meta, "rows": rows}, indent=1)


if __name__ == "__main__":
    main()
