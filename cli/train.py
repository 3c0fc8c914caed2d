"""`glad train`, `glad eval` and `glad report`: option parsing only; the work is in glad.engine."""

from __future__ import annotations

import dataclasses
import logging
import sys
import typing

import click

from glad.config import (
    EVAL_PRECISIONS,
    FIELD_TYPES,
    METHODS,
    ConfigError,
    TrainConfig,
    canonical_settings,
    default_workers,
    is_user_data,
    option_name,
    weights_or_none,
)


def _field_option(f: dataclasses.Field):
    """The `glad train` option of one TrainConfig field: its flag, type, default and help."""
    meta = f.metadata
    annotation = FIELD_TYPES[f.name]
    args = typing.get_args(annotation)
    if type(None) in args:  # X | None
        annotation = next(a for a in args if a is not type(None))
    multiple = typing.get_origin(annotation) is list and meta["nargs"] is None
    inner = typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else annotation
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    flag = option_name(f.name)
    kwargs = {"help": meta["help"].format(meta["note"]()) if meta["note"] else meta["help"],
              "show_default": meta["show_default"]}
    if meta["envvar"]:
        kwargs["envvar"] = meta["envvar"]
    if inner is bool:
        if default is None:  # three states: on, off, decided by glad
            return click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, **kwargs)
        return click.option(flag, *meta["aliases"], f.name, is_flag=True, default=default, **kwargs)
    kind = click.Choice(list(meta["choices"])) if meta["choices"] else inner
    return click.option(flag, *meta["aliases"], f.name, type=kind, default=default, multiple=multiple,
                        nargs=meta["nargs"] or 1, **kwargs)


# the TrainConfig fields that are `glad train` options of the same name
FIELD_OPTIONS = [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("cli", True)]
_OPTION_FIELDS = {f.name for f in FIELD_OPTIONS}


def _fail(message: str) -> None:
    click.echo(f"glad: error: {message}", err=True)
    sys.exit(2)


def _yaml_loader():
    """yaml.SafeLoader reading floats as YAML 1.2 does (`1e-3` is a number, not a string)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)?\.?[0-9]+(?:[eE][-+]?[0-9]+)$|^[-+]?\.(?:inf|Inf|INF|nan|NaN|NAN)$"),
        list("-+0123456789."))
    return Loader


def _load_yaml(path: str) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_yaml_loader()) or {}  # noqa: S506 - a SafeLoader subclass
    except OSError as exc:
        _fail(f"cannot read --config {path}: {exc.strerror}")
    except yaml.YAMLError as exc:
        _fail(f"--config {path} is not valid YAML: {' '.join(str(exc).split())}")
    if not isinstance(data, dict):
        _fail(f"--config {path} must hold a mapping of settings, e.g. `lr: 0.001`")
    return dict(data)


# Options that choose what a run is about; when none is given, `glad train` runs the built-in demo.
_CHOOSERS = ("datasets", "data_root", "model", "pretrained", "protocol")


def _build_config(ctx: click.Context, params: dict, demo: bool = False) -> TrainConfig:
    """Settings in priority order: explicit flags > --config file > built-in demo > TrainConfig."""
    source = ctx.get_parameter_source
    sources = click.core.ParameterSource
    explicit = {name for name in params if source(name) in (sources.COMMANDLINE, sources.ENVIRONMENT)}
    # An environment default ($GLAD_DATA) does not switch the demo off: a command line or file must.
    chosen = {name for name in explicit if source(name) == sources.COMMANDLINE}
    try:
        file_values = canonical_settings(_load_yaml(params["config"])) if params.get("config") else {}
    except ConfigError as exc:
        _fail(f"--config {params['config']}: {exc}")
    values = {}
    demo_run = demo or not (set(_CHOOSERS) & (chosen | set(file_values)))
    if demo_run:
        from glad.engine.defaults import builtin_overrides  # imports torch: only for the demo

        protocol = params["protocol"] if "protocol" in explicit else file_values.get("protocol", "base-to-novel")
        values.update(builtin_overrides(protocol))
    values.update(file_values)
    for name in explicit:
        if name in _OPTION_FIELDS:
            values[name] = list(params[name]) if isinstance(params[name], tuple) else params[name]
    for plural in ("datasets", "seeds", "methods"):
        if plural in explicit:
            values[plural] = list(params[plural])
    if "seed" in explicit:
        if "seeds" in explicit:
            _fail(f"--seed {params['seed']} and --seeds {' '.join(map(str, params['seeds']))} conflict; pass one of them")
        values["seeds"] = [params["seed"]]
    given = explicit | set(file_values)
    if ("protocol" not in given and values.get("datasets") and not demo_run
            and all(is_user_data(d) for d in values["datasets"])):
        values["protocol"] = "finetune"  # your own data: every class, every image (see --protocol)
    if values.get("protocol") == "finetune" and "shots" not in given:
        values["shots"] = [0]  # every training image
    if values.get("protocol") == "few-shot" and "shots" not in explicit | set(file_values) and not demo_run:
        from glad.protocols import FEW_SHOT_SHOTS

        values["shots"] = list(FEW_SHOT_SHOTS)  # the protocol's own: CoOp's 1, 2, 4, 8, 16
    if "pretrained" in values:
        values["pretrained"] = weights_or_none(values["pretrained"])
    try:
        return TrainConfig.from_dict(values).validate()
    except ConfigError as exc:
        _fail(str(exc))


def _common(f):
    options = [
        click.option("--config", type=click.Path(dir_okay=False),
                     help="YAML file of settings (field or flag names: `lr: 1e-3`, `dataset: [dtd]`); flags win."),
        click.option("--dataset", "datasets", multiple=True,
                     help="Dataset (repeatable): a CoOp name (dtd, imagenet, ...), imagefolder:PATH (one folder "
                          "per class), PATH.csv (path,label[,class]) or a CoOp split file PATH.json. Transfer "
                          "protocols: the first is the source, the rest are targets."),
        click.option("--seeds", "seeds", type=int, multiple=True, help="Seeds (repeatable); default 1 2 3."),
        click.option("--seed", type=int, help="A single seed (same as one --seeds)."),
        click.option("--method", "methods", type=click.Choice(list(METHODS)), multiple=True,
                     help="Method(s) of the ablation (repeatable); default glad."),
        *(_field_option(field) for field in FIELD_OPTIONS),
        click.option("--threads", type=click.IntRange(1), default=None,
                     help="torch CPU threads of each process (default: torch's own choice)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _setup_logging():
    """glad's own progress lines at INFO; other libraries' (open_clip's ~9 lines a model load)
    only with `glad -v`. Under torchrun only rank 0 tells progress; every rank warns."""

    verbose = bool(click.get_current_context().find_root().params.get("verbose"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    from glad.config import launch_ranks

    rank = launch_ranks()[0]
    logging.getLogger("glad").setLevel(logging.INFO if rank == 0 or verbose else logging.WARNING)


def _one_line(exc: BaseException) -> str:
    """The message of an error, also when a DataLoader worker wrapped it in its traceback."""
    text = str(exc)
    if "Original Traceback" in text:  # torch's worker wrapper: the last line is the real error
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last and "Error" in last.split(": ", 1)[0] else last
    return " ".join(text.split())


def _run_guarded(fn):
    """Known errors become one line and exit code 2; nothing else is swallowed."""
    from glad.data import DatasetError
    from glad.engine.runner import OutputConflictError
    from glad.engine.train import TrainingDivergedError
    from glad.models import AdapterMismatchError, WeightsUnavailableError

    try:
        return fn()
    except (ConfigError, DatasetError, OutputConflictError, WeightsUnavailableError, AdapterMismatchError,
            TrainingDivergedError, ValueError, FileNotFoundError) as exc:
        _fail(_one_line(exc))
    except OSError as exc:  # a full disk, a read-only file system, a file where a folder should be
        import errno

        where = exc.filename or "a file glad writes"
        fix = ("free some space and rerun with --resume: finished jobs and checkpoints are kept"
               if exc.errno == errno.ENOSPC else "choose another --output, or fix its permissions")
        _fail(f"cannot write {where}: {exc.strerror or exc}; {fix}")


class _StopSignals:
    """SIGINT/SIGTERM ask the run to stop after its current step (a cluster's preemption sends
    SIGTERM); a second SIGINT stops at once."""

    def __init__(self):
        self.received = None

    def __call__(self) -> bool:
        return self.received is not None

    def __enter__(self):
        import signal
        import threading

        self._old = {}
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        import signal

        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        click.echo(f"glad: {signal.Signals(signum).name} received: stopping after the current step "
                   "(Ctrl-C again to stop at once)", err=True)

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False


def _resume_command() -> str:
    import shlex

    args = [a for a in sys.argv[1:] if a != "--resume"]
    return shlex.join(["glad", *args, "--resume"])


@click.command()
@_common
@click.option("--resume", is_flag=True, help="Continue unfinished jobs in --output from their checkpoints.")
@click.option("--demo", is_flag=True,
              help="The built-in offline demo (glad-tiny on the generated world) for --protocol; other flags "
                   "still apply.")
@click.pass_context
def train(ctx, resume, demo, **params):
    """Train and evaluate a protocol; print the paper-style table.

    The defaults shown are the paper's (ViT-B-16 `openai`, the protocol's CoOp
    datasets under --data-root, method glad). With no option choosing data, model,
    weights or protocol (--dataset, --data-root, --model, --pretrained, --protocol,
    or the same in --config), `glad train` runs the built-in offline demo instead,
    with its own settings: glad-tiny on the generated world, zeroshot/lora/glad,
    10 epochs, seeds 1 2 3 (as does --demo).
    """
    import os
    import signal

    threads = params.pop("threads", None)
    cfg = _build_config(ctx, params, demo=demo)  # settings refused before torch is imported (seconds)
    from glad.engine.runner import run_protocol
    from glad.engine.train import StopRequested

    if threads:
        import torch

        torch.set_num_threads(threads)
    # torchrun's elastic restart (--max-restarts) reruns the same command: continue, as --resume
    resume = resume or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    _setup_logging()
    stop = _StopSignals()
    try:
        with stop:
            _run_guarded(lambda: run_protocol(cfg, resume=resume, echo=click.echo, stop_flag=stop))
    except (StopRequested, KeyboardInterrupt):
        signum = stop.received or signal.SIGINT
        click.echo(f"glad: stopped; continue with: {_resume_command()}", err=True)
        sys.exit(128 + int(signum))


@click.command(name="eval")
@click.option("--adapter", default=None,
              help="Adapter folder written by glad train or by glad export --format peft, or hf-hub:user/name "
                   "(omit for zero-shot CLIP).")
@click.option("--template", default=None,
              help="Prompt template, e.g. 'a photo of a {}.' (default: the --template the adapter was "
                   "trained with, else each dataset's own).")
@click.option("--dataset", "datasets", multiple=True, required=True, help="Dataset(s) to evaluate on.")
@click.option("--split", type=click.Choice(["all", "base", "novel"]), default="all",
              help="Classes to test on: all, or the base / novel half (relabelled, as in base-to-novel).")
@click.option("--data-root", default="data", envvar="GLAD_DATA",
              help="Folder holding the CoOp dataset folders; env GLAD_DATA.")
@click.option("--model", default=None, help="Base model (default: the adapter's).")
@click.option("--pretrained", default=None, help="Base weights (default: the adapter's).")
@click.option("--tokenizer", default=None, help="A local tokenizer folder or tokenizer.json (default: the "
                                                 "adapter's, else the model's own).")
@click.option("--cache-dir", default=None, help="Where downloaded weights are cached.")
@click.option("--offline", is_flag=True, help="Never reach the network for weights.")
@click.option("--batch-size", type=int, default=128, help="Evaluation batch size.")
@click.option("--workers", type=click.IntRange(0), default=None,
              help="Data-loading worker processes (0: in the main one; default: the usable CPUs, at most 16).")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(list(EVAL_PRECISIONS)), default="auto",
              help="Evaluation autocast; auto: fp16 on a GPU (as CoOp's CLIP numbers), fp32 on a CPU.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def evaluate_cmd(adapter, template, datasets, split, data_root, model, pretrained, tokenizer, cache_dir, offline,
                 batch_size, workers, device, precision, as_json):
    """Evaluate a saved adapter (or zero-shot CLIP) on any dataset."""
    import json

    from glad.engine.evaluate_cli import evaluate_adapter

    _setup_logging()
    results = _run_guarded(lambda: evaluate_adapter(
        adapter=adapter, datasets=list(datasets), split=split, data_root=data_root, model=model,
        pretrained=pretrained, tokenizer=tokenizer, cache_dir=cache_dir, offline=offline, batch_size=batch_size,
        workers=default_workers() if workers is None else workers,
        device=device, precision=precision, template=template))
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            click.echo(f"{r['dataset']} [{r['split']}]: {r['accuracy']:.2f}% of {r['num_samples']}")


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--plot", is_flag=True, help="Also draw results-<protocol>.png for each protocol (needs matplotlib).")
def report(folder, plot):
    """Rebuild the results tables (Markdown + CSV) of an output folder."""
    import os

    from glad.engine.results import write_tables
    from glad.engine.runner import read_run_records

    records = _run_guarded(lambda: read_run_records(folder))
    if not records:
        _fail(f"{folder}/results.jsonl holds no results; run `glad train --output {folder}` first")
    for table in write_tables(records, folder).values():
        click.echo(table.markdown())
    if plot:
        from glad.engine.plot import plot_protocol

        for protocol in dict.fromkeys(r["protocol"] for r in records):
            try:
                path = plot_protocol(records, protocol, os.path.join(folder, f"results-{protocol}.png"))
            except ImportError:
                _fail("--plot needs matplotlib: pip install matplotlib")
            click.echo(f"wrote {path}")
        from glad.engine.plot import plot_training

        try:
            click.echo(f"wrote {plot_training(folder, os.path.join(folder, 'training.png'))}")
        except ValueError as exc:  # only zero-shot results: no training to draw
            click.echo(f"no training curves: {exc}")
