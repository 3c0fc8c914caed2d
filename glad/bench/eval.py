"""`glad bench eval`: evaluation images/s of merged LoRA against plain CLIP, with and without AlignNet.

It times ``glad.engine.evaluate.class_logits`` inside ``GladModel.merged`` (what ``evaluate``
does per batch), every variant on the same batch, interleaved round by round.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from glad.bench import backbone
from glad.bench import report as reports
from glad.bench.timing import interleaved, load_average, median, paired_ratio

VARIANTS = ("clip", "lora-merged", "clip+alignnet", "lora-merged+alignnet", "lora-unmerged")


def plain_of(variant: str) -> str:
    """The plain-CLIP variant a tuned one is compared with."""
    return "clip+alignnet" if variant.endswith("+alignnet") else "clip"


@dataclass
class Config(backbone.ModelBenchConfig):
    """Settings of `glad bench eval` (CLI flags map one-to-one)."""

    batch_size: int = 64
    num_classes: int = 1000
    variants: Sequence[str] = VARIANTS
    text_classes: int = 32  # classes whose prompt encoding is timed (per-class cost)

    def validate(self) -> Config:
        backbone.check_names("variants", self.variants, VARIANTS)
        if self.text_classes < 0:
            raise ValueError(f"text_classes must be >= 0, got {self.text_classes}")
        return super().validate()


def run(cfg: Config, progress=None, command: str | None = None) -> dict:
    """Images/s of evaluation for each variant at `cfg.num_classes` classes; returns the report."""
    from glad.engine.evaluate import class_logits, class_text_features
    from glad.models import GladModel

    say = progress or (lambda _msg: None)
    report, runtime, clock, clip, tokenizer, (images, _, classnames) = backbone.prepare(cfg, "eval", command)
    device = runtime.device

    models = {}
    with contextlib.ExitStack() as stack:
        for name in cfg.variants:
            lora = name.startswith("lora")
            # merging writes into the base weights: merged variants get their own copy
            base = copy.deepcopy(clip) if name.startswith("lora-merged") else backbone.shared_copy(clip)
            torch.manual_seed(cfg.seed)
            model = GladModel(base, tokenizer, lora=backbone.lora_config() if lora else None,
                              use_alignnet=name.endswith("+alignnet"), model_name=cfg.model,
                              pretrained=cfg.pretrained).to(device)
            backbone.randomize_adapters(model)  # a trained adapter, not the zero initialisation
            model.eval()
            if name.startswith("lora-merged"):
                stack.enter_context(model.merged())
            models[name] = model

        # Text features: the prompts of `text_classes` classes encoded through the real path
        # (per-class cost); the C-class matrix the images are scored against is random unit
        # vectors (its values do not change the time, and encoding 1000 prompts per variant
        # would dominate the run).
        text_ms = {}
        for name, model in models.items():
            if cfg.text_classes:
                def encode(model=model):
                    return class_text_features(model, classnames[:cfg.text_classes], backbone.TEMPLATE, runtime)

                encode()  # warm: the first call of each model pays one-off costs
                seconds, _, _ = clock.measure(encode)
                text_ms[name] = 1e3 * seconds / cfg.text_classes
        g = torch.Generator().manual_seed(cfg.seed + 1)
        dim = next(iter(models.values())).embed_dim
        text = torch.nn.functional.normalize(torch.randn(cfg.num_classes, dim, generator=g), dim=-1).to(device)

        fns = {name: (lambda m=model: class_logits(m, images, text, runtime).argmax(dim=1)) for name, model in models.items()}
        loads = []

        def after(label):
            def note(r):
                loads.append(load_average())
                say(f"{label} round {r + 1}")
            return note

        interleaved(clock, fns, cfg.warmup, after_round=after("warmup"))
        times, _walls = interleaved(clock, fns, cfg.rounds, offset=cfg.warmup, after_round=after("timed"))

    results = {}
    for name in models:
        med = median(times[name])
        results[name] = {"median_batch_ms": 1e3 * med, "images_per_s": cfg.batch_size / med,
                         "wall_images_per_s": cfg.batch_size / median(_walls[name]),
                         "times_ms": [round(1e3 * t, 3) for t in times[name]],
                         "text_ms_per_class": text_ms.get(name)}
    for name, entry in results.items():
        plain = results.get(plain_of(name))
        entry["x_plain"] = None if plain is None else entry["images_per_s"] / plain["images_per_s"]
        entry["paired_x_plain"] = None if plain is None else paired_ratio(plain["times_ms"], entry["times_ms"])
    report["config"]["variants"] = list(models)
    report["load"]["rounds"] = loads
    return reports.finish(report, variants=results)


def table(report: dict) -> str:
    cfg = report["config"]
    title = (f"{cfg['model']}, batch {cfg['batch_size']}, {cfg['num_classes']} classes, {report['image_size']} px, "
             f"median of {cfg['rounds']} interleaved rounds")
    head = f"{'variant':<22} {'images/s':>10} {'x plain':>8} {'batch ms':>10} {'text ms/class':>14}"
    lines = reports.header(report, title, head)
    for name, e in report["variants"].items():
        text = "-" if e["text_ms_per_class"] is None else f"{e['text_ms_per_class']:.2f}"
        ratio = "-" if e["x_plain"] is None else f"{e['x_plain']:.3f}"
        lines.append(f"{name:<22} {e['images_per_s']:>10.2f} {ratio:>8} {e['median_batch_ms']:>10.1f} {text:>14}")
    lines.append("x plain: images/s over those of plain CLIP with the same head (clip, or clip+alignnet)")
    return "\n".join(lines)
