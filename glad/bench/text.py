"""`glad bench text`: text encoding at the prompts' length against the full context (CPU).

``GladModel.tokenize`` cuts the padding after the longest prompt's end token and
``GladModel.encode_text`` runs the causal text tower on that many positions only. This
times ``encode_text`` forward + backward (a weighted sum of the features, gradients to
text LoRA r = 8 on q/k/v, as in a training step) for C class prompts "a photo of a {name}."
with the cut (``trimmed``) and without it (``full``, the model's whole context), and reports
the largest feature difference between the two.

Names are 1-4 words drawn (seeded) from a fixed list, so prompt lengths vary like class names
do (the cut follows the longest). Times are medians of the timing thread's CPU time with one
torch thread, runs interleaved. ``chunk`` runs forward + backward over at most that many
prompts at a time (gradients accumulate; the same work), which bounds memory: ViT-B-16's full
context at C = 500 keeps ~25 GB of activations for backward in one piece.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from glad.bench import backbone
from glad.bench import report as reports
from glad.bench.timing import Clock, interleaved, median

WORDS = ("red", "golden", "retriever", "fox", "sports", "car", "mountain", "bike", "tabby", "cat",
         "great", "white", "shark", "coffee", "mug", "steel", "arch", "bridge", "grey", "whale",
         "electric", "guitar", "water", "tower", "snow", "leopard", "paper", "towel", "ice", "cream",
         "three-toed", "soft-coated", "wire-haired", "long-horned")


@dataclass
class Config:
    """Settings of `glad bench text` (CLI flags map one-to-one)."""

    classes: tuple[int, ...] = (10, 500)
    repeats: int = 3
    chunk: int = 100
    model: str = "ViT-B-16"


def prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"a photo of a {' '.join(rng.choices(WORDS, k=rng.randint(1, 4)))}." for _ in range(n)]


def build(name: str, trim: bool):
    """`name` with random weights, text LoRA with non-zero B; the context cut after the prompts or not."""
    from glad.models import GladModel

    with torch.random.fork_rng(devices=[]):  # both variants get the same weights and adapters
        torch.manual_seed(0)
        clip, tokenizer, _ = backbone.load_backbone(name, None, "cpu")
        model = GladModel(clip, tokenizer, lora=backbone.lora_config(encoders=("text",)), use_alignnet=False,
                          model_name=name, trim_text=trim)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "lora_B" in pname:
                    p.normal_(0, 0.02)
    return model


def encode_step(model, tokens, weights, chunk):
    model.zero_grad(set_to_none=True)
    out = []
    for i in range(0, len(tokens), chunk):
        feats = model.encode_text(tokens[i:i + chunk])
        (feats * weights[i:i + chunk]).sum().backward()
        out.append(feats.detach())
    return torch.cat(out)


def run(cfg: Config, progress=None, command: str | None = None) -> dict:
    say = progress or (lambda _msg: None)
    if not cfg.classes or min(cfg.classes) < 1 or cfg.repeats < 1 or cfg.chunk < 1:
        raise ValueError(f"classes, repeats and chunk must be >= 1, got {list(cfg.classes)}, {cfg.repeats}, "
                         f"{cfg.chunk}")
    torch.set_num_threads(1)
    clock = Clock(torch.device("cpu"), "thread")
    report = reports.start("text", cfg, clock.device, clock.kind, command)
    models = {"full": build(cfg.model, False), "trimmed": build(cfg.model, True)}
    rows = []
    for n in cfg.classes:
        say(f"{n} classes")
        texts = prompts(n)
        tokens = {k: m.tokenize(texts) for k, m in models.items()}
        weights = torch.randn(n, models["full"].embed_dim, generator=torch.Generator().manual_seed(1))
        feats = {k: encode_step(m, tokens[k], weights, cfg.chunk) for k, m in models.items()}  # warm-up
        fns = {k: (lambda m=m, t=tokens[k], w=weights: encode_step(m, t, w, cfg.chunk)) for k, m in models.items()}
        times, _ = interleaved(clock, fns, cfg.repeats)
        med = {k: median(v) for k, v in times.items()}
        rows.append({"classes": n, "tokens_full": tokens["full"].shape[1], "tokens_trimmed": tokens["trimmed"].shape[1],
                     "full_s": med["full"], "trimmed_s": med["trimmed"], "speedup": med["full"] / med["trimmed"],
                     "max_abs_diff": (feats["full"] - feats["trimmed"]).abs().max().item()})
    return reports.finish(report, rows=rows)


def table(report: dict) -> str:
    cfg = report["config"]
    title = (f"{cfg['model']} text tower (random weights), forward + backward, median of {cfg['repeats']} "
             f"interleaved runs, {cfg['chunk']} prompts per chunk")
    head = f"{'classes':>7} {'tokens full':>12} {'trimmed':>8} {'full s':>9} {'trimmed s':>10} {'speedup':>8} {'max abs diff':>13}"
    lines = reports.header(report, title, head)
    for r in report["rows"]:
        lines.append(f"{r['classes']:>7} {r['tokens_full']:>12} {r['tokens_trimmed']:>8} {r['full_s']:>9.3f} "
                     f"{r['trimmed_s']:>10.3f} {r['speedup']:>7.2f}x {r['max_abs_diff']:>13.1e}")
    return "\n".join(lines)
