"""`glad train`, `glad eval` and `glad report`: option parsing only; the work is in glad.engine."""

from __future__ import annotations

import logging
import sys

import click

from glad.config import METHODS, PROTOCOLS, ConfigError, TrainConfig

# TrainConfig field -> option name, for every flag that maps one-to-one.
_FIELD_OPTIONS = {
    "protocol": "--protocol", "data_root": "--data-root", "shots": "--shots", "model": "--model",
    "pretrained": "--pretrained", "cache_dir": "--cache-dir", "offline": "--offline", "output": "--output",
    "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "wd": "--wd",
    "warmup_iters": "--warmup-iters", "grad_clip": "--grad-clip", "precision": "--precision",
    "lora_r": "--lora-r", "lora_alpha": "--lora-alpha", "lora_dropout": "--lora-dropout", "rslora": "--rslora",
    "rho": "--rho", "gradreg_alpha": "--gradreg-alpha", "delta": "--delta", "kl_weight": "--kl-weight",
    "workers": "--workers", "eval_batch_size": "--eval-batch-size", "device": "--device",
    "deterministic": "--deterministic", "checkpoint_every": "--checkpoint-every", "max_iters": "--max-iters",
    "template": "--template", "crop_scale": "--crop-scale",
}


def _fail(message: str) -> None:
    click.echo(f"glad: error: {message}", err=True)
    sys.exit(2)


def _load_yaml(path: str) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as exc:
        _fail(f"cannot read --config {path}: {exc.strerror}")
    except yaml.YAMLError as exc:
        _fail(f"--config {path} is not valid YAML: {exc}")
    if not isinstance(data, dict):
        _fail(f"--config {path} must hold a mapping of settings, e.g. `lr: 0.001`")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _build_config(ctx: click.Context, params: dict) -> TrainConfig:
    """Settings in priority order: explicit flags > --config file > built-in default > TrainConfig."""
    from glad.engine.defaults import builtin_overrides

    explicit = {name for name in params
                if ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)}
    values = {}
    file_values = _load_yaml(params["config"]) if params.get("config") else {}
    given = explicit | set(file_values)
    if not {"datasets", "model"} & given:  # no data and no model named: the offline default
        values.update(builtin_overrides(params["protocol"] if "protocol" in explicit
                                        else file_values.get("protocol", "base-to-novel")))
    values.update(file_values)
    for name in explicit:
        if name in _FIELD_OPTIONS:
            values[name] = list(params[name]) if isinstance(params[name], tuple) else params[name]
    for plural, single in (("datasets", "datasets"), ("seeds", "seeds"), ("methods", "methods")):
        if plural in explicit:
            values[single] = list(params[plural])
    if "seed" in explicit:
        values["seeds"] = [params["seed"]]
    if isinstance(values.get("pretrained"), str) and values["pretrained"].lower() in ("none", "random", ""):
        values["pretrained"] = None
    try:
        return TrainConfig.from_dict(values).validate()
    except ConfigError as exc:
        _fail(str(exc))


def _common(f):
    options = [
        click.option("--config", type=click.Path(dir_okay=False), help="YAML file of defaults (field: value)."),
        click.option("--protocol", type=click.Choice(PROTOCOLS), default="base-to-novel"),
        click.option("--dataset", "datasets", multiple=True,
                     help="Dataset name (repeatable). Transfer protocols: first is the source, the rest targets."),
        click.option("--data-root", default="data", envvar="GLAD_DATA", help="Folder holding the datasets."),
        click.option("--shots", type=int, default=16),
        click.option("--seeds", "seeds", type=int, multiple=True, help="Seeds (repeatable); default 1 2 3."),
        click.option("--seed", type=int, help="A single seed (same as one --seeds)."),
        click.option("--method", "methods", type=click.Choice(list(METHODS)), multiple=True,
                     help="Method(s) of the ablation; default glad."),
        click.option("--model", default="ViT-B-16", help="open_clip model name, or glad-tiny."),
        click.option("--pretrained", default="openai", help="open_clip tag, local file, hf-hub:..., or none."),
        click.option("--cache-dir", default=None, help="Where downloaded weights are cached."),
        click.option("--offline", is_flag=True, help="Never reach the network for weights."),
        click.option("--output", default="runs/glad", help="Output folder."),
        click.option("--epochs", type=int, default=20), click.option("--batch-size", type=int, default=32),
        click.option("--lr", type=float, default=1e-3), click.option("--wd", type=float, default=1e-2),
        click.option("--warmup-iters", type=int, default=0),
        click.option("--grad-clip", type=float, default=None, help="Clip the final gradient's norm."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto"),
        click.option("--lora-r", type=int, default=8), click.option("--lora-alpha", type=float, default=8.0),
        click.option("--lora-dropout", type=float, default=0.0),
        click.option("--rslora", is_flag=True, help="Scale LoRA by alpha/sqrt(r) instead of alpha/r."),
        click.option("--rho", type=float, default=0.1, help="SAM perturbation radius."),
        click.option("--gradreg-alpha", type=float, default=0.5, help="Mix of the perturbed gradient."),
        click.option("--delta", type=float, default=1e-12),
        click.option("--kl-weight", type=float, default=1.0),
        click.option("--workers", type=int, default=4), click.option("--eval-batch-size", type=int, default=128),
        click.option("--device", default="auto"),
        click.option("--deterministic", is_flag=True, help="Deterministic kernels (slower)."),
        click.option("--checkpoint-every", type=int, default=0, help="Iterations between checkpoints (0: per epoch)."),
        click.option("--max-iters", type=int, default=None, help="Stop each job after this many iterations."),
        click.option("--template", default=None, help="Prompt template overriding the dataset's, e.g. 'a photo of a {}.'"),
        click.option("--crop-scale", type=float, nargs=2, default=None,
                     help="Training crop's area fraction LOW HIGH (default: the dataset's; CoOp's 0.08 1)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _setup_logging():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def _run_guarded(fn):
    """Known errors become one line and exit code 2; nothing else is swallowed."""
    from glad.data import DatasetError
    from glad.engine.runner import OutputConflictError
    from glad.models import WeightsUnavailableError

    try:
        return fn()
    except (ConfigError, DatasetError, OutputConflictError, WeightsUnavailableError, ValueError,
            FileNotFoundError) as exc:
        _fail(str(exc))


@click.command()
@_common
@click.option("--resume", is_flag=True, help="Continue unfinished jobs in --output from their checkpoints.")
@click.pass_context
def train(ctx, resume, **params):
    """Train and evaluate a protocol; print the paper-style table.

    With no --dataset and no --model, runs the built-in offline default
    (glad-tiny on the procedurally generated world).
    """
    from glad.engine.runner import run_protocol

    cfg = _build_config(ctx, params)
    _setup_logging()
    _run_guarded(lambda: run_protocol(cfg, resume=resume, echo=click.echo))


@click.command(name="eval")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False), default=None,
              help="Adapter folder written by glad train (omit for zero-shot CLIP).")
@click.option("--dataset", "datasets", multiple=True, required=True, help="Dataset(s) to evaluate on.")
@click.option("--split", type=click.Choice(["all", "base", "novel"]), default="all")
@click.option("--data-root", default="data", envvar="GLAD_DATA")
@click.option("--model", default=None, help="Base model (default: the adapter's).")
@click.option("--pretrained", default=None, help="Base weights (default: the adapter's).")
@click.option("--cache-dir", default=None)
@click.option("--offline", is_flag=True)
@click.option("--batch-size", type=int, default=128)
@click.option("--workers", type=int, default=4)
@click.option("--device", default="auto")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto")
@click.option("--json", "as_json", is_flag=True)
def evaluate_cmd(adapter, datasets, split, data_root, model, pretrained, cache_dir, offline, batch_size,
                 workers, device, precision, as_json):
    """Evaluate a saved adapter (or zero-shot CLIP) on any dataset."""
    import json

    from glad.engine.evaluate_cli import evaluate_adapter

    _setup_logging()
    results = _run_guarded(lambda: evaluate_adapter(
        adapter=adapter, datasets=list(datasets), split=split, data_root=data_root, model=model,
        pretrained=pretrained, cache_dir=cache_dir, offline=offline, batch_size=batch_size, workers=workers,
        device=device, precision=precision))
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            click.echo(f"{r['dataset']} [{r['split']}]: {r['accuracy']:.2f}% of {r['num_samples']}")


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--plot", is_flag=True, help="Also draw results.png (needs matplotlib).")
def report(folder, plot):
    """Rebuild the results tables (Markdown + CSV) of an output folder."""
    import os

    from glad.engine.results import read_records, write_tables

    records = _run_guarded(lambda: read_records(os.path.join(folder, "results.jsonl")))
    if not records:
        _fail(f"{folder}/results.jsonl holds no results; run `glad train --output {folder}` first")
    for table in write_tables(records, folder).values():
        click.echo(table.markdown())
    if plot:
        from glad.engine.plot import plot_base_novel

        try:
            path = plot_base_novel(records, os.path.join(folder, "results.png"))
        except ImportError:
            _fail("--plot needs matplotlib: pip install matplotlib")
        click.echo(f"wrote {path}")
