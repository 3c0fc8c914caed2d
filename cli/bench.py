"""`glad bench NAME`: parses each benchmark's options and runs glad.bench.NAME (no logic here)."""

import importlib
import json
import os
import shlex
import sys

import click

_METHODS = ("lora", "lora-alignnet", "lora-sam", "lora-gradreg", "glad")
_VARIANTS = ("clip", "lora-merged", "clip+alignnet", "lora-merged+alignnet", "lora-unmerged")


@click.group()
def bench():
    """Time glad's ops and workloads against references and the copy bandwidth; every table states
    its clock, machine and load. Each NAME is also benchmarks/bench_NAME.py."""
    if not click.get_current_context().find_root().params.get("verbose"):
        # the profiler that measures memory logs from C++ (its start and stop, a device count, a
        # block allocated before it started); read when torch loads, which it has not yet
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")


def _command() -> str:
    argv = sys.argv
    return shlex.join(["python", *argv] if argv[0].endswith(".py") else ["glad", *argv[1:]])


def _run(name: str, cfg, as_json: bool, output: str | None, quiet: bool = False) -> None:
    """Runs glad.bench.`name` on `cfg`; prints its table (or JSON), writes the JSON to `output`."""
    workload = importlib.import_module(f"glad.bench.{name}")
    try:
        report = workload.run(cfg, progress=None if quiet else lambda m: click.echo(m, err=True), command=_command())
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if output:
        from glad.bench.report import write

        write(report, output)
    click.echo(json.dumps(report, indent=2) if as_json else workload.table(report))
    if output and not as_json:
        click.echo(f"report: {output}", err=True)


def _none(value):
    from glad.config import weights_or_none

    return weights_or_none(value)


def _csv(value):
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def _options(*options):
    """Apply click options listed top-down."""
    def apply(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn
    return apply


_report_options = _options(
    click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table."),
    click.option("--output", "--out", "output", type=click.Path(dir_okay=False), default=None,
                 help="Also write the JSON report here (atomically)."),
    click.option("--quiet", is_flag=True, help="No progress lines on stderr."),
)


@bench.command("ops")
@click.option("--sizes", default=None,
              help="Comma list: 'adapter' (150 tensors, 1.1M values) and/or value counts like 16M, 500k "
                   "(default: adapter,16M,64M on a CPU; adapter,64M,256M on a GPU, beyond its L2 cache).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32",
              help="Tensor dtype.")
@click.option("--device", default=None, help="cpu or cuda[:i] (default: cuda when available).")
@click.option("--backends", default=None, help="Comma list (default: every available backend on the device).")
@click.option("--repeat", type=click.IntRange(1), default=3, help="Timed rounds per size (the best is reported).")
@click.option("--warmup", type=click.IntRange(0), default=1, help="Untimed rounds per size.")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch.set_num_threads for CPU runs.")
@click.option("--calls", type=click.IntRange(1), default=None,
              help="Back-to-back calls per timing on a GPU, between CUDA events (default 20; 1 on a CPU).")
@_report_options
def ops_cmd(sizes, dtype, device, backends, repeat, warmup, threads, calls, as_json, output, quiet):
    """glad.ops backends vs reference, a naive per-tensor loop and a same-device copy."""
    from glad.bench.ops import Config

    _run("ops", Config(sizes=_csv(sizes), dtype=dtype, device=device, backends=_csv(backends), repeat=repeat,
                       warmup=warmup, threads=threads, calls=calls), as_json, output, quiet)


_run_options = _options(
    click.option("--pretrained", default="none",
                 help="Weights tag or file; 'none' = random init (times do not depend on the weights)."),
    click.option("--rounds", type=click.IntRange(1), default=10, help="Timed rounds (each runs every method once)."),
    click.option("--warmup", type=click.IntRange(0), default=2, help="Untimed rounds first."),
    click.option("--device", default="auto", help="cpu or cuda[:i] (auto: cuda when available)."),
    click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
                 help="As glad train: auto = bf16 autocast on a GPU that has it, else fp32."),
    click.option("--threads", type=click.IntRange(1), default=None, help="torch.set_num_threads."),
    click.option("--clock", type=click.Choice(["auto", "cpu", "wall"]), default="auto",
                 help="auto: process CPU time summed over threads on a CPU (robust on a shared machine), "
                      "wall time on a GPU."),
    click.option("--seed", type=int, default=0, help="Backbone, adapter and batch seed."),
)
_model_options = _options(
    click.option("--model", default="glad-tiny", help="open_clip model name, or glad-tiny."),
    click.option("--tokenizer", default=None, help="A local tokenizer folder or tokenizer.json (SigLIP & co)."),
    _run_options,
)


@bench.command("train")
@_model_options
@click.option("--batch-size", type=click.IntRange(1), default=32, help="Images per step.")
@click.option("--num-classes", type=click.IntRange(1), default=10, help="Classes (prompts encoded every pass).")
@click.option("--method", "methods", multiple=True, type=click.Choice(_METHODS),
              help="Methods to time (repeatable; default: all five).")
@click.option("--split-rounds", type=click.IntRange(0), default=2,
              help="Instrumented steps per method for the time split (0: no split).")
@click.option("--no-memory", is_flag=True, help="Skip the peak-memory measurement.")
@_report_options
def train_cmd(pretrained, methods, no_memory, as_json, output, quiet, **settings):
    """Training step of every method side by side: median time, ratio to lora, memory, time split."""
    from glad.bench.train import Config

    _run("train", Config(pretrained=_none(pretrained), methods=tuple(methods) or _METHODS, memory=not no_memory,
                         **settings), as_json, output, quiet)


@bench.command("eval")
@_model_options
@click.option("--batch-size", type=click.IntRange(1), default=64, help="Images per evaluation batch.")
@click.option("--num-classes", type=click.IntRange(1), default=1000, help="Classes scored per image.")
@click.option("--variant", "variants", multiple=True, type=click.Choice(_VARIANTS),
              help="Variants to time (repeatable; default: all).")
@click.option("--text-classes", type=click.IntRange(0), default=32,
              help="Prompts whose encoding is timed (per-class text cost; 0: skip).")
@_report_options
def eval_cmd(pretrained, variants, as_json, output, quiet, **settings):
    """Evaluation images/s: merged LoRA vs plain CLIP, with and without AlignNet."""
    from glad.bench.eval import Config

    _run("eval", Config(pretrained=_none(pretrained), variants=tuple(variants) or _VARIANTS, **settings), as_json,
         output, quiet)


@bench.command("data")
@click.option("--images", type=click.IntRange(8), default=96, help="JPEGs per size (generated, quality 90).")
@click.option("--workers", "workers", multiple=True, type=click.IntRange(0),
              help="Worker counts to time (repeatable; default 0 and the usable CPUs, at most 16).")
@click.option("--model", "models", multiple=True, help="Models whose images/s are shown beside (default: "
              "glad-tiny and ViT-B-16).")
@click.option("--model-batch", type=click.IntRange(1), default=8, help="Images per model step.")
@click.option("--rounds", type=click.IntRange(1), default=2, help="Timed rounds (the best is kept).")
@click.option("--device", default="auto", help="Where the models run: cpu or cuda[:i].")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch.set_num_threads.")
@_report_options
def data_cmd(images, workers, models, model_batch, rounds, device, threads, as_json, output, quiet):
    """Loader images/s (decode every epoch vs decoded once; streamed vs prepared test sets) beside
    the model's own images/s, on 500x375 and 1024x768 JPEGs."""
    from glad.bench.data import Config
    from glad.config import default_workers

    _run("data", Config(images=images, workers=tuple(workers) or tuple(dict.fromkeys((0, default_workers()))),
                        models=tuple(models) or Config.models, model_batch=model_batch, rounds=rounds,
                        device=device, threads=threads), as_json, output, quiet)


@bench.command("gradreg")
@click.option("--quick", is_flag=True, help="3 x 3 steps instead of 7 x 10 (a smoke run).")
@click.option("--backends", default=None, help="Comma list (default: every available CPU backend).")
@click.option("--threads", type=click.IntRange(1), default=1, help="torch.set_num_threads.")
@click.option("--model", default="glad-tiny", help="The model of the real training step (random weights).")
@_report_options
def gradreg_cmd(quick, backends, threads, model, as_json, output, quiet):
    """What the GradReg step costs outside its forward/backward passes."""
    from glad.bench.gradreg import Config

    _run("gradreg", Config(quick=quick, backends=_csv(backends), threads=threads, model=model), as_json, output,
         quiet)


@bench.command("alignnet")
@click.option("--batch", type=click.IntRange(1), default=256, help="Images B.")
@click.option("--classes", type=click.IntRange(1), default=1000, help="Classes C.")
@click.option("--dim", type=click.IntRange(1), default=512, help="Feature width D.")
@click.option("--repeats", type=click.IntRange(1), default=3, help="Timed runs per case (the median is kept).")
@click.option("--budget", "budgets", multiple=True, type=click.IntRange(1),
              help="Chunk budgets of the fused provider in MiB (repeatable; default 256, 64 and 16).")
@click.option("--quick", is_flag=True, help="B = 32, C = 100, one run (a smoke run).")
@_report_options
def alignnet_cmd(batch, classes, dim, repeats, budgets, quick, as_json, output, quiet):
    """AlignNet logits, fused and class-chunked at several memory budgets, vs the direct formula."""
    from glad.bench.alignnet import Config

    _run("alignnet", Config(batch=batch, classes=classes, dim=dim, repeats=repeats, quick=quick,
                            budgets_mib=tuple(budgets) or Config.budgets_mib), as_json, output, quiet)


@bench.command("text")
@click.option("--classes", default="10,500", help="Comma list of class counts.")
@click.option("--repeats", type=click.IntRange(1), default=3, help="Timed runs (the median is kept).")
@click.option("--chunk", type=click.IntRange(1), default=100, help="Prompts per forward + backward.")
@click.option("--model", default="ViT-B-16", help="open_clip model name (random weights).")
@_report_options
def text_cmd(classes, repeats, chunk, model, as_json, output, quiet):
    """Text encoding at the prompts' length vs the full context, forward + backward."""
    from glad.bench.text import Config

    try:
        counts = tuple(int(c) for c in _csv(classes) or ())
    except ValueError:
        raise click.BadParameter(f"{classes!r} is not a comma list of integers", param_hint="--classes") from None
    _run("text", Config(classes=counts, repeats=repeats, chunk=chunk, model=model), as_json, output, quiet)


@bench.command("host")
@click.option("--model", default="ViT-B-16", help="open_clip model whose adapters the teacher pass switches.")
@click.option("--calls", type=click.IntRange(1), default=300, help="Back-to-back calls per timing.")
@click.option("--repeats", type=click.IntRange(1), default=5, help="Timings (the best is kept).")
@_report_options
def host_cmd(model, calls, repeats, as_json, output, quiet):
    """Host time per call of glad.ops (validation, dispatch) and of the teacher pass's adapter switch."""
    from glad.bench.host import Config

    _run("host", Config(model=model, calls=calls, repeats=repeats), as_json, output, quiet)


@bench.command("world")
@click.option("--budget", type=click.Choice(["default", "test"]), default="default",
              help="glad-tiny's pretraining budget (pretrained first if not cached).")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", help="Split scored.")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch.set_num_threads.")
@_report_options
def world_cmd(budget, split, threads, as_json, output, quiet):
    """glad-tiny's zero-shot accuracy on every built-in dataset, against chance."""
    from glad.bench.world import Config

    _run("world", Config(budget=budget, split=split, threads=threads), as_json, output, quiet)


@bench.command("backbones")
@click.option("--model", "models", multiple=True, default=["ViT-B-16", "ViT-B-16-SigLIP2"], show_default=True,
              help="open_clip models to time side by side (repeatable).")
@click.option("--tokenizer", "tokenizers", multiple=True, metavar="MODEL=PATH",
              help="A local tokenizer for one model (repeatable), e.g. ViT-B-16-SigLIP2=~/siglip2-tokenizer.")
@_run_options
@click.option("--batch-size", type=click.IntRange(1), default=32, help="Images per step.")
@click.option("--num-classes", type=click.IntRange(1), default=10, help="Classes (prompts encoded every pass).")
@click.option("--method", "methods", multiple=True, type=click.Choice(_METHODS),
              help="Methods to time (repeatable; default: lora and glad).")
@_report_options
def backbones_cmd(models, tokenizers, pretrained, methods, as_json, output, quiet, **settings):
    """The GLAD step against the plain LoRA step on several model families, in one run."""
    from glad.bench.backbones import Config

    pairs = {}
    for item in tokenizers:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"{item!r}: expected MODEL=PATH", param_hint="--tokenizer")
        pairs[name] = path
    _run("backbones", Config(models=tuple(models), tokenizers=pairs, pretrained=_none(pretrained),
                             methods=tuple(methods) or ("lora", "glad"), **settings), as_json, output, quiet)
