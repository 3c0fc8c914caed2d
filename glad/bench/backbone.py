"""What every model workload starts from: a runtime, the frozen CLIP, glad's adapter settings
and one seeded batch, built the way the engine builds them."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from glad.bench import report
from glad.bench.timing import Clock

TEMPLATE = "a photo of a {}."


@dataclass
class ModelBenchConfig:
    """The settings the train and eval benches share (CLI flags map one-to-one)."""

    model: str = "glad-tiny"
    pretrained: str | None = None
    tokenizer: str | None = None  # a local tokenizer, for models whose own would be downloaded
    batch_size: int = 32
    num_classes: int = 10
    rounds: int = 10
    warmup: int = 2
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    clock: str = "auto"  # auto | cpu | wall
    seed: int = 0

    def validate(self):
        check_settings(self)
        return self


def check_names(what: str, names, known) -> None:
    """`names` is a non-empty list drawn from `known`, or a ValueError that lists them."""
    if not names or any(n not in known for n in names):
        raise ValueError(f"{what} {list(names)!r}: expected a non-empty list of {', '.join(known)}")


def check_settings(cfg) -> None:
    """The settings train and eval benches share, each with the value it got."""
    checks = [(cfg.num_classes >= 1, f"num_classes must be >= 1, got {cfg.num_classes}"),
              (cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}"),
              (cfg.rounds >= 1, f"rounds must be >= 1, got {cfg.rounds}"),
              (cfg.warmup >= 0, f"warmup must be >= 0, got {cfg.warmup}"),
              (cfg.clock in ("auto", "cpu", "wall"), f"clock must be auto, cpu or wall, got {cfg.clock!r}"),
              (cfg.precision in ("auto", "fp32", "bf16"),
               f"precision must be auto, fp32 or bf16, got {cfg.precision!r}"),
              (cfg.threads is None or cfg.threads >= 1, f"threads must be >= 1, got {cfg.threads}")]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def runtime(device: str, precision: str = "fp32"):
    from glad.engine.runtime import setup_runtime

    return setup_runtime(device, precision, eval_precision=precision if precision in ("fp32", "bf16") else "auto")


def image_size(clip) -> int:
    size = clip.visual.image_size
    return size[0] if isinstance(size, (tuple, list)) else int(size)


def load_backbone(model: str, pretrained: str | None, device, seed: int = 0, tokenizer: str | None = None):
    """The frozen CLIP (eval mode), its tokenizer and image size; seeded like the engine's runner."""
    from glad.models.loading import load_base_clip

    clip, _, _, tokenizer = load_base_clip(model, pretrained, device=device, seed=seed, tokenizer=tokenizer)
    return clip.eval(), tokenizer, image_size(clip)


def shared_copy(clip):
    """A copy of `clip` whose frozen weights are the original's tensors (memory: one backbone)."""
    memo = {id(t): t for t in list(clip.parameters()) + list(clip.buffers())}
    return copy.deepcopy(clip, memo)


def lora_config(**overrides):
    """The engine's LoRA settings (TrainConfig defaults), as the runner builds them."""
    from glad.config import TrainConfig
    from glad.models import LoraConfig

    cfg = TrainConfig()
    settings = dict(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, targets=tuple(cfg.lora_targets),
                    encoders=tuple(cfg.lora_encoders), rslora=cfg.rslora)
    return LoraConfig(**(settings | overrides))


def model_config(name: str) -> dict | None:
    """The architecture a result was measured on (a model name's config can change)."""
    import open_clip

    return open_clip.get_model_config(name)


def random_batch(batch_size: int, num_classes: int, size: int, seed: int, device):
    """Seeded images, balanced labels and class names."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, size, size, generator=g)
    labels = torch.arange(batch_size) % num_classes
    classnames = [f"class {i}" for i in range(num_classes)]
    return images.to(device), labels.to(device), classnames


def randomize_adapters(model, std: float = 0.02) -> None:
    """Non-zero adapter weights, as after training (LoRA B starts at zero)."""
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.normal_(0.0, std)


def prepare(cfg, bench: str, command: str | None):
    """What the train and eval benches start from: `cfg` validated and its threads applied, the
    report's head, the runtime, a clock, the backbone and one seeded batch."""
    cfg.validate()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    rt = runtime(cfg.device, cfg.precision)
    clock = Clock(rt.device, cfg.clock)
    head = report.start(bench, cfg, rt.device, clock.kind, command)
    clip, tokenizer, size = load_backbone(cfg.model, cfg.pretrained, rt.device, cfg.seed, cfg.tokenizer)
    batch = random_batch(cfg.batch_size, cfg.num_classes, size, cfg.seed, rt.device)
    head.update(image_size=size, model_config=model_config(cfg.model), prompt_template=TEMPLATE)
    return head, rt, clock, clip, tokenizer, batch
