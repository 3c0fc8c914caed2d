"""`glad bench backbones`: the GLAD step against the plain LoRA step (CLIP-LoRA's recipe) on
several open_clip families in one run, e.g. OpenAI's ViT-B-16 beside ViT-B-16-SigLIP2.

Each model is timed by `glad bench train` (the engine's own step, methods interleaved round
by round on one batch); this collects the medians and each model's glad / lora ratio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from glad.bench import backbone, train
from glad.bench import report as reports


@dataclass
class Config(backbone.ModelBenchConfig):
    """Settings of `glad bench backbones`; `tokenizers` maps a model to a local tokenizer."""

    model: str = ""  # unused: see models
    models: Sequence[str] = ("ViT-B-16", "ViT-B-16-SigLIP2")
    tokenizers: dict[str, str] = field(default_factory=dict)
    methods: Sequence[str] = ("lora", "glad")

    def validate(self) -> Config:
        backbone.check_names("methods", self.methods, train.METHODS)
        if "lora" not in self.methods:
            raise ValueError("methods must include lora, the reference of every ratio")
        if not self.models:
            raise ValueError("models: name at least one open_clip model")
        unknown = sorted(set(self.tokenizers) - set(self.models))
        if unknown:
            raise ValueError(f"tokenizers given for models not benchmarked: {unknown}")
        return super().validate()


def run(cfg: Config, progress=None, command: str | None = None) -> dict:
    """Time every method of `cfg` on each model; returns the report."""
    from glad.bench.timing import Clock

    cfg.validate()
    if cfg.threads is not None:  # before the report's head records the machine's threads
        import torch

        torch.set_num_threads(cfg.threads)
    say = progress or (lambda _msg: None)
    device = backbone.runtime(cfg.device, cfg.precision).device
    report = reports.start("backbones", cfg, device, Clock(device, cfg.clock).kind, command)  # the load before
    shared = {f.name: getattr(cfg, f.name) for f in fields(backbone.ModelBenchConfig)}
    per_model = {}
    for name in cfg.models:
        say(f"{name}")
        one = train.Config(**{**shared, "model": name, "tokenizer": cfg.tokenizers.get(name)},
                           methods=tuple(cfg.methods), split_rounds=0, memory=False)
        result = train.run(one, progress, command)
        per_model[name] = {"image_size": result["image_size"], "methods": result["methods"],
                           "load": result["load"]}
    return reports.finish(report, models=per_model)


def table(report: dict) -> str:
    """One row per model: each method's median step and its ratio to lora."""
    cfg = report["config"]
    methods = list(cfg["methods"])
    title = (f"pretrained={cfg['pretrained']}, batch {cfg['batch_size']}, {cfg['num_classes']} classes, "
             f"median of {cfg['rounds']} interleaved rounds per model")
    head = f"{'model':<22} {'px':>4} " + " ".join(f"{m + ' ms':>12}" for m in methods) + " " + " ".join(
        f"{m + '/lora':>16}" for m in methods if m != "lora")
    lines = reports.header(report, title, head)
    for name, m in report["models"].items():
        row = f"{name:<22} {m['image_size']:>4} " + " ".join(f"{m['methods'][k]['median_ms']:>12.1f}" for k in methods)
        row += " " + " ".join(f"{m['methods'][k]['ratio_to_lora']:>16.2f}" for k in methods if k != "lora")
        lines.append(row)
    lines.append("lora = CLIP-LoRA's step (LoRA in q/k/v of both towers, cross-entropy); glad = LoRA + AlignNet + "
                 "KL to the frozen model + the regularised two-pass gradient")
    return "\n".join(lines)
