"""Typed settings for a glad run; a resolved copy is written next to every artifact."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import typing
from dataclasses import dataclass, field

from glad.protocols import PROTOCOLS  # noqa: F401 - the one protocol table, re-exported

# Where LoRA can go: the towers, and the projections of each attention block (q/k/v/out)
# and of its MLP (mlp_fc / mlp_proj).
ENCODERS = ("image", "text")
TARGETS = ("q", "k", "v", "out", "mlp_fc", "mlp_proj")



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


EVAL_PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# bf16 and amp_bf16: bf16 autocast; amp: fp16 autocast with a GradScaler (open_clip's names)
TRAIN_PRECISIONS = ("auto", "fp32", "bf16", "amp_bf16", "amp")


class ConfigError(ValueError):
    """A setting is out of range or inconsistent; the message says which and how to fix it."""


def setting(default=None, help: str = "", *, factory=None, choices=None, aliases=(), envvar=None, nargs=None,
            show_default=False, cli: bool = True, note=None):
    """A TrainConfig field and what its `glad train` option needs: the option is generated from
    the field (name, type, default) and this help, so the two cannot drift apart. `note()`,
    when given, fills the help's `{}` with what this machine makes of the default."""
    meta = {"help": help, "choices": choices, "aliases": tuple(aliases), "envvar": envvar, "nargs": nargs,
            "show_default": show_default, "cli": cli, "note": note}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every setting of `glad train`; CLI flags map one-to-one to these fields."""

    protocol: str = setting("base-to-novel", "The paper's protocol; its CoOp datasets unless --dataset names others.",
                            choices=tuple(PROTOCOLS))
    # --dataset, --seed(s) and --method are hand-written options (singular flags, plural fields)
    datasets: list[str] = setting(factory=list, cli=False)  # empty: the protocol's defaults
    data_root: str = setting("data", "Folder holding the CoOp dataset folders (imagenet/, dtd/, ...); env GLAD_DATA.",
                             envvar="GLAD_DATA")
    shots: list[int] = setting(factory=lambda: [16], help="Training images per class (few-shot draw); repeatable "
                               "with --protocol few-shot, whose default is 1 2 4 8 16.")
    seeds: list[int] = setting(factory=lambda: [1, 2, 3], cli=False)
    methods: list[str] = setting(factory=lambda: ["glad"], cli=False)
    model: str = setting("ViT-B-16", "open_clip model name, hf-hub:org/repo, local-dir:FOLDER, or glad-tiny.")
    pretrained: str | None = setting("openai", "open_clip tag, local weights file, transformers CLIPModel folder, "
                                     "hf-hub:..., or none.")
    tokenizer: str | None = setting(None, "A local tokenizer (a Hugging Face tokenizer folder or tokenizer.json) for "
                                    "models whose tokenizer would be downloaded (SigLIP, CLIPA, multilingual towers).")
    cache_dir: str | None = setting(None, "Where downloaded weights are cached.")
    offline: bool = setting(False, "Never reach the network for weights.")
    output: str = setting("runs/glad", "Output folder; every file of the run is written here.")
    # optimisation (paper 4.1 and SPEC section 4)
    epochs: int = setting(20, "Training epochs per job.")
    batch_size: int = setting(32, "Training batch size (over all processes).")
    lr: float = setting(1e-3, "Peak learning rate (AdamW, cosine per iteration).")
    wd: float = setting(1e-2, "AdamW weight decay.")
    warmup_iters: int = setting(0, "Linear warmup iterations (--warmup: open_clip's name).", aliases=("--warmup",))
    grad_clip: float | None = setting(None, "Clip the final gradient's norm (--grad-clip-norm: open_clip's name).",
                                      aliases=("--grad-clip-norm",))
    precision: str = setting("auto", "Training precision: fp32 (TF32 matmuls on a GPU), bf16 or amp_bf16 (bf16 "
                             "autocast), amp (fp16 autocast with loss scaling); auto: bf16 on a GPU that has it, "
                             "else amp; fp32 on a CPU.", choices=(*TRAIN_PRECISIONS, "fp16"))
    eval_precision: str = setting("auto", "Evaluation autocast; auto: fp16 on a GPU (as CoOp's published CLIP "
                                  "numbers), fp32 on a CPU. Recorded in every result.", choices=EVAL_PRECISIONS)
    # GLAD
    lora_r: int = setting(8, "LoRA rank.")
    lora_alpha: float = setting(8.0, "LoRA scale numerator (alpha / r).")
    lora_dropout: float = setting(0.0, "Dropout on the LoRA input.")
    lora_targets: list[str] = setting(factory=lambda: ["q", "k", "v"], choices=TARGETS, show_default=True,
                                      help="Projections of each attention block that get LoRA (repeatable): q k v, "
                                           "out (the attention output), mlp_fc / mlp_proj (the MLP).")
    lora_encoders: list[str] = setting(factory=lambda: list(ENCODERS), choices=ENCODERS, show_default=True,
                                       help="Towers that get LoRA (repeatable); e.g. --lora-encoders text for a "
                                            "ConvNeXt image tower, which has no attention.")
    rslora: bool = setting(False, "Scale LoRA by alpha/sqrt(r) instead of alpha/r.")
    rho: float = setting(0.1, "SAM perturbation radius.")
    gradreg_alpha: float = setting(0.5, "Mix of the perturbed gradient.")
    delta: float = setting(1e-12, "Floor of ||g||^2 in the conflict projection.")
    kl_weight: float = setting(1.0, "Weight of the KL term to zero-shot CLIP.")
    # running
    workers: int | None = setting(None, "Data-loading worker processes, 0: in the main one. [default: the usable "
                                  "CPUs, at most 16; here {}]", note=lambda: default_workers())
    image_cache_gb: float = setting(8.0, "Memory for images decoded once: a job's training images (each epoch then "
                                    "only crops, flips, normalises) and the run's test sets (decoded once for all "
                                    "adapters); larger sets are decoded from the files; 0: off.")
    eval_batch_size: int = setting(128, "Evaluation batch size.")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    deterministic: bool = setting(False, "Deterministic kernels (slower).")
    checkpoint_every: int = setting(0, "Iterations between checkpoints (0: per epoch).")
    max_iters: int | None = setting(None, "Stop each job after this many iterations.")
    template: str | None = setting(None, "Prompt template overriding the dataset's, e.g. 'a photo of a {}.'")
    tensorboard: bool = setting(False, "Also stream the per-step training metrics to <output>/tensorboard (needs "
                                "tensorboard).")
    parallel: str = setting("data", "Under torchrun: data = each job over all processes (DDP); jobs = each process "
                            "runs whole (method, dataset, seed) jobs on its own GPU.", choices=("data", "jobs"))
    shard: str | None = setting(None, "I/N: run the I-th of N shares of the jobs (0-based, e.g. "
                                "$SLURM_ARRAY_TASK_ID/8); shards write results-shardI-of-N.jsonl, glad report "
                                "merges them.")
    # None: the dataset's own (built-in world: 0.9-1, since a small crop of a 32 px picture can
    # cut out the objects that are its label), else CoOp's 0.08-1
    crop_scale: list[float] | None = setting(None, "Training crop's area fraction LOW HIGH (default: the dataset's; "
                                             "CoOp's 0.08 1).", nargs=2)
    quick_gelu: bool | None = setting(None, "QuickGELU activations (OpenAI's weights use them). Default: decided "
                                      "from the weights.")

    def validate(self) -> TrainConfig:
        """Raise ConfigError naming the first bad setting; returns self for chaining."""
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), FIELD_TYPES[f.name])
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
            (bool(self.shots) and (all(k >= 1 for k in self.shots) or (self.shots == [0] and self.protocol == "finetune")),
             f"--shots must be >= 1 (--protocol finetune: 0 = every training image), got {self.shots}"),
            (self.protocol != "finetune" or bool(self.datasets),
             "--protocol finetune trains on your data: pass --dataset imagefolder:PATH (or a CSV / split JSON)"),
            (len(self.shots) == 1 or self.protocol == "few-shot",
             f"several --shots ({self.shots}) need --protocol few-shot; other protocols train one shot count"),
            (len(set(self.shots)) == len(self.shots), f"--shots repeats a value: {self.shots}"),
            (self.eval_precision in EVAL_PRECISIONS,
             f"--eval-precision must be one of {', '.join(EVAL_PRECISIONS)}, got {self.eval_precision!r}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr > 0.0, f"--lr must be > 0, got {self.lr}"),
            (self.wd >= 0.0, f"--wd must be >= 0, got {self.wd}"),
            (self.lora_r >= 1, f"--lora-r must be >= 1, got {self.lora_r}"),
            (self.warmup_iters >= 0, f"--warmup-iters must be >= 0, got {self.warmup_iters}"),
            (self.checkpoint_every >= 0,
             f"--checkpoint-every must be >= 0 (0: once per epoch), got {self.checkpoint_every}"),
            (self.max_iters is None or self.max_iters >= 1,
             f"--max-iters must be >= 1 (an untrained adapter is no result), got {self.max_iters}"),
            (self.eval_batch_size >= 1, f"--eval-batch-size must be >= 1, got {self.eval_batch_size}"),
            (0.0 <= self.lora_dropout < 1.0, f"--lora-dropout must be in [0, 1), got {self.lora_dropout}"),
            (bool(self.lora_encoders) and set(self.lora_encoders) <= set(ENCODERS),
             f"--lora-encoders must name image and/or text, got {self.lora_encoders}"),
            (bool(self.lora_targets) and set(self.lora_targets) <= set(TARGETS),
             f"--lora-targets must be among {', '.join(TARGETS)}, got {self.lora_targets}"),
            (self.workers is None or self.workers >= 0, f"--workers must be >= 0, got {self.workers}"),
            (self.image_cache_gb >= 0, f"--image-cache-gb must be >= 0, got {self.image_cache_gb}"),
            (self.parallel in ("data", "jobs"), f"--parallel must be data or jobs, got {self.parallel!r}"),
            (self.shard is None or _shard_ok(self.shard),
             f"--shard must be I/N with 0 <= I < N (e.g. $SLURM_ARRAY_TASK_ID/8), got {self.shard!r}"),
            (self.precision != "fp16", "--precision fp16 (pure fp16 weights, as open_clip names it) cannot train "
             "LoRA stably; use amp (fp16 autocast with loss scaling) or bf16"),
            (self.precision in TRAIN_PRECISIONS,
             f"--precision must be one of {', '.join(TRAIN_PRECISIONS)}, got {self.precision!r}"),
            (bool(self.seeds), "no seed given; pass --seeds 1 2 3"),
            (self.grad_clip is None or self.grad_clip > 0, f"--grad-clip must be > 0, got {self.grad_clip}"),
            (_device_ok(self.device), f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}"),
            (self.crop_scale is None or (len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1),
             f"--crop-scale must be two numbers 0 < low <= high <= 1, got {self.crop_scale}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.template is not None and (problem := check_template(self.template)):
            raise ConfigError(problem)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Settings by field name; see `canonical_settings` for the other spellings accepted."""
        return cls(**canonical_settings(data))

    def training_identity(self) -> dict:
        """The settings that change what a trained adapter is (not where or how fast it runs)."""
        ignore = {"protocol", "output", "workers", "image_cache_gb", "eval_batch_size", "device", "checkpoint_every",
                  "datasets", "parallel", "shard",
                  "seeds", "methods", "data_root", "cache_dir", "offline", "tensorboard"}
        if self.protocol == "few-shot":  # its job folders and records carry the shot count
            ignore.add("shots")
        return {k: v for k, v in self.to_dict().items() if k not in ignore}


def canonical_settings(data: dict) -> dict:
    """`data` keyed by TrainConfig field: the CLI's flag names (`dataset`, `seed`, `method`,
    `batch-size`, `grad-clip-norm`) are accepted too; an unknown name gets a "did you mean"."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in _FLAG_ALIASES:
            name, value = _FLAG_ALIASES[name](value)
        if name not in known:
            close = ([_SYNONYMS[name]] if name in _SYNONYMS else
                     difflib.get_close_matches(name, sorted(known) + sorted(_FLAG_ALIASES), n=1, cutoff=0.6))
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
            raise ConfigError(f"unknown setting {key!r}{hint}")
        values[name] = value
    return values


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


# Singular CLI spellings of list settings (a YAML file may use the flag's name).
_FLAG_ALIASES = {
    "dataset": lambda v: ("datasets", _as_list(v)),
    "seed": lambda v: ("seeds", _as_list(v)),
    "shots": lambda v: ("shots", _as_list(v)),
    "method": lambda v: ("methods", _as_list(v)),
    "grad_clip_norm": lambda v: ("grad_clip", v),
    "warmup": lambda v: ("warmup_iters", v),
}


# Other projects' names for a setting: suggested, never applied silently.
_SYNONYMS = {"learning_rate": "lr", "weight_decay": "wd", "num_workers": "workers", "rank": "lora_r",
             "lora_rank": "lora_r", "num_shots": "shots", "n_shots": "shots", "epoch": "epochs",
             "num_epochs": "epochs", "arch": "model", "data": "data_root", "root": "data_root"}


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_type(name: str, value, annotation) -> None:
    """Refuse a value of the wrong type (a YAML string for a number) or a non-finite number."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if value is None and type(None) in args:
        return
    if args and type(None) in args:  # X | None
        annotation = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{option_name(name)} must be a list, got {value!r}")
        for v in value:
            _check_type(name, v, args[0])
        return
    expected = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[annotation]
    ok = {int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          bool: isinstance(value, bool), str: isinstance(value, str)}[annotation]
    if not ok:
        raise ConfigError(f"{option_name(name)} must be {expected}, got {value!r} ({type(value).__name__})")
    if annotation is float and not math.isfinite(value):
        raise ConfigError(f"{option_name(name)} must be a finite number, got {value!r}")


FIELD_TYPES = typing.get_type_hints(TrainConfig)


NO_WEIGHTS = ("", "none", "null", "random")  # --pretrained values asking for random initialisation


def weights_or_none(pretrained: str | None) -> str | None:
    """`--pretrained` as glad reads it everywhere: None (random initialisation) for None, "",
    "none", "null" or "random" (any case), else the value itself."""
    if pretrained is None or (isinstance(pretrained, str) and pretrained.strip().lower() in NO_WEIGHTS):
        return None
    return pretrained


def check_template(template: str) -> str | None:
    """Why `template` is no prompt template (None when it is one)."""
    if _one_slot(template):
        return None
    return (f"--template must hold exactly one {{}} for the class name, e.g. 'a photo of a {{}}.', "
            f"got {template!r}")


def _one_slot(template: str) -> bool:
    try:
        return template.count("{}") == 1 and template.format("x").count("x") >= 1
    except (IndexError, KeyError, ValueError):
        return False


def _shard_ok(shard: str) -> bool:
    m = re.fullmatch(r"(\d+)/(\d+)", shard)
    return bool(m) and 0 <= int(m.group(1)) < int(m.group(2))


def _device_ok(device: str) -> bool:
    return bool(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device))


def launch_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) torchrun gave this process; (0, 1, 0) without torchrun.
    The one place glad reads them from the environment."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


def default_workers() -> int:
    """Data-loading workers when none are asked for: the CPUs this process may use, at most 16."""
    import os

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return max(1, min(16, usable))


def dumps(config: TrainConfig) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


IMAGEFOLDER_PREFIX = "imagefolder:"


def user_data(spec) -> tuple[str, str] | None:
    """(kind, path) of a dataset the user brings: ("imagefolder", PATH) for `imagefolder:PATH`,
    ("csv", PATH) or ("json", PATH) for a CSV or a CoOp split file; None for a named dataset.
    The one place glad tells the two apart."""
    raw = str(spec).strip()
    if raw.lower().startswith(IMAGEFOLDER_PREFIX):
        return "imagefolder", raw[len(IMAGEFOLDER_PREFIX):]
    for kind in ("csv", "json"):
        if raw.lower().endswith("." + kind):
            return kind, raw
    return None


def is_user_data(spec) -> bool:
    """A dataset the user brings (an image folder, a CSV, a split JSON), not a named one."""
    return user_data(spec) is not None
