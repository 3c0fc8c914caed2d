"""Typed settings for a glad run; a resolved copy is written next to every artifact."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

PROTOCOLS = ("base-to-novel", "cross-dataset", "domain-generalization")


@dataclass(frozen=True)
class Method:
    """One row of the paper's ablation (Table 4): which GLAD parts are switched on."""

    name: str
    train: bool = True
    gradreg_mode: str = "off"  # "off" | "sam" | "gradreg" (glad.optim.GradReg modes)
    alignnet: bool = False
    kl: bool = True


METHODS = {
    m.name: m
    for m in (
        Method("zeroshot", train=False, kl=False),
        Method("lora", kl=False),  # CLIP-LoRA baseline: LoRA + CE only (row a)
        Method("lora-sam", gradreg_mode="sam"),  # (b)
        Method("lora-gradreg", gradreg_mode="gradreg"),  # (c)
        Method("lora-alignnet", alignnet=True),  # (d)
        Method("glad", gradreg_mode="gradreg", alignnet=True),  # (e) everything
    )
}


class ConfigError(ValueError):
    """A setting is out of range or inconsistent; the message says which and how to fix it."""


@dataclass
class TrainConfig:
    """Every setting of `glad train`; CLI flags map one-to-one to these fields."""

    protocol: str = "base-to-novel"
    datasets: list[str] = field(default_factory=list)  # empty: the protocol's defaults
    data_root: str = "data"
    shots: int = 16
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    methods: list[str] = field(default_factory=lambda: ["glad"])
    model: str = "ViT-B-16"
    pretrained: str | None = "openai"
    cache_dir: str | None = None
    offline: bool = False
    output: str = "runs/glad"
    # optimisation (paper 4.1 and SPEC section 4)
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    wd: float = 1e-2
    warmup_iters: int = 0
    grad_clip: float | None = None
    precision: str = "auto"  # auto | fp32 | bf16 (autocast)
    # GLAD
    lora_r: int = 8
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["q", "k", "v"])
    lora_encoders: list[str] = field(default_factory=lambda: ["image", "text"])
    rslora: bool = False
    rho: float = 0.1
    gradreg_alpha: float = 0.5
    delta: float = 1e-12
    kl_weight: float = 1.0
    # running
    workers: int = 4
    eval_batch_size: int = 128
    device: str = "auto"
    deterministic: bool = False
    checkpoint_every: int = 0  # iterations between checkpoints; 0 = once per epoch
    max_iters: int | None = None  # stop early (tests, quick looks); None = full schedule
    template: str | None = None  # overrides the dataset's prompt template
    # Training crop's area fraction; None: the dataset's own (built-in world: 0.9-1, since a
    # small crop of a 32 px picture can cut out the objects that are its label), else CoOp's 0.08-1.
    crop_scale: list[float] | None = None

    def validate(self) -> TrainConfig:
        """Raise ConfigError naming the first bad setting; returns self for chaining."""
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        for name in self.methods:
            if name not in METHODS:
                raise ConfigError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        if not self.methods:
            raise ConfigError("no method given; pass --method glad (or another of " + ", ".join(METHODS) + ")")
        checks = [
            (0.0 <= self.gradreg_alpha <= 1.0, f"--gradreg-alpha must be in [0, 1], got {self.gradreg_alpha}"),
            (self.rho >= 0.0 and math.isfinite(self.rho), f"--rho must be >= 0, got {self.rho}"),
            (self.delta > 0.0, f"--delta must be > 0, got {self.delta}"),
            (self.kl_weight >= 0.0, f"--kl-weight must be >= 0, got {self.kl_weight}"),
            (self.shots >= 1, f"--shots must be >= 1, got {self.shots}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr > 0.0, f"--lr must be > 0, got {self.lr}"),
            (self.wd >= 0.0, f"--wd must be >= 0, got {self.wd}"),
            (self.lora_r >= 1, f"--lora-r must be >= 1, got {self.lora_r}"),
            (0.0 <= self.lora_dropout < 1.0, f"--lora-dropout must be in [0, 1), got {self.lora_dropout}"),
            (self.workers >= 0, f"--workers must be >= 0, got {self.workers}"),
            (self.precision in ("auto", "fp32", "bf16"), f"--precision must be auto, fp32 or bf16, got {self.precision!r}"),
            (bool(self.seeds), "no seed given; pass --seeds 1 2 3"),
            (self.grad_clip is None or self.grad_clip > 0, f"--grad-clip must be > 0, got {self.grad_clip}"),
            (self.crop_scale is None or (len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1),
             f"--crop-scale must be two numbers 0 < low <= high <= 1, got {self.crop_scale}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def training_identity(self) -> dict:
        """The settings that change what a trained adapter is (not where or how fast it runs)."""
        ignore = {"protocol", "output", "workers", "eval_batch_size", "device", "checkpoint_every", "datasets",
                  "seeds", "methods", "data_root", "cache_dir", "offline"}
        return {k: v for k, v in self.to_dict().items() if k not in ignore}


def dumps(config: TrainConfig) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)
