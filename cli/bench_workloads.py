"""`glad bench train` and `glad bench eval`: end-to-end costs (subcommands of `glad bench`)."""

import json

import click
from glad_cli.bench import bench

_METHODS = ("lora", "lora-alignnet", "lora-sam", "lora-gradreg", "glad")
_VARIANTS = ("clip", "lora-merged", "clip+alignnet", "lora-merged+alignnet", "lora-unmerged")


def _common(fn):
    """Options shared by both workloads (applied bottom-up, so listed in reverse)."""
    options = [
        click.option("--model", default="glad-tiny", help="open_clip model name, or glad-tiny."),
        click.option("--pretrained", default="none",
                     help="Weights tag or file; 'none' = random init (times do not depend on the weights)."),
        click.option("--rounds", type=click.IntRange(1), default=10, help="Timed rounds (each runs every method once)."),
        click.option("--warmup", type=click.IntRange(0), default=2, help="Untimed rounds first."),
        click.option("--device", default="auto", help="cpu or cuda[:i] (auto: cuda when available)."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
                     help="As glad train: auto = bf16 autocast on a GPU that has it, else fp32."),
        click.option("--threads", type=click.IntRange(1), default=None, help="torch.set_num_threads."),
        click.option("--clock", type=click.Choice(["auto", "cpu", "wall"]), default="auto",
                     help="auto: process CPU time on a CPU (robust on a shared machine), wall time on a GPU."),
        click.option("--seed", type=int, default=0, help="Backbone, adapter and batch seed."),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table."),
        click.option("--output", type=click.Path(dir_okay=False), default=None, help="Also write the JSON report here."),
        click.option("--quiet", is_flag=True, help="No progress lines on stderr."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _none(value):
    return None if value is None or value.strip().lower() in ("", "none", "null", "random") else value


def _emit(report, as_json, output, table):
    from glad.io import atomic_write_json

    if output:
        atomic_write_json(output, report)
    click.echo(json.dumps(report, indent=2) if as_json else table(report))


@bench.command("train")
@_common
@click.option("--batch-size", type=click.IntRange(1), default=32, help="Images per step.")
@click.option("--num-classes", type=click.IntRange(1), default=10, help="Classes (prompts encoded every pass).")
@click.option("--method", "methods", multiple=True, type=click.Choice(_METHODS),
              help="Methods to time (repeatable; default: all five).")
@click.option("--split-rounds", type=click.IntRange(0), default=2,
              help="Instrumented steps per method for the time split (0: no split).")
@click.option("--no-memory", is_flag=True, help="Skip the peak-memory measurement.")
def train_cmd(model, pretrained, rounds, warmup, device, precision, threads, clock, seed, as_json, output,
              quiet, batch_size, num_classes, methods, split_rounds, no_memory):
    """Training step of every method side by side: median time, ratio to lora, memory, time split."""
    from glad.engine.bench import TrainBenchConfig, format_train_table, run_train_bench

    cfg = TrainBenchConfig(model=model, pretrained=_none(pretrained), batch_size=batch_size,
                           num_classes=num_classes, rounds=rounds, warmup=warmup, split_rounds=split_rounds,
                           methods=tuple(methods) or _METHODS, device=device, precision=precision,
                           threads=threads, clock=clock, memory=not no_memory, seed=seed)
    try:
        report = run_train_bench(cfg, progress=None if quiet else lambda m: click.echo(m, err=True))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    _emit(report, as_json, output, format_train_table)


@bench.command("eval")
@_common
@click.option("--batch-size", type=click.IntRange(1), default=64, help="Images per evaluation batch.")
@click.option("--num-classes", type=click.IntRange(1), default=1000, help="Classes scored per image.")
@click.option("--variant", "variants", multiple=True, type=click.Choice(_VARIANTS),
              help="Variants to time (repeatable; default: all).")
@click.option("--text-classes", type=click.IntRange(0), default=32,
              help="Prompts whose encoding is timed (per-class text cost; 0: skip).")
def eval_cmd(model, pretrained, rounds, warmup, device, precision, threads, clock, seed, as_json, output,
             quiet, batch_size, num_classes, variants, text_classes):
    """Evaluation images/s: merged LoRA vs plain CLIP, with and without AlignNet."""
    from glad.engine.bench import EvalBenchConfig, format_eval_table, run_eval_bench

    cfg = EvalBenchConfig(model=model, pretrained=_none(pretrained), batch_size=batch_size,
                          num_classes=num_classes, rounds=rounds, warmup=warmup,
                          variants=tuple(variants) or _VARIANTS, text_classes=text_classes, device=device,
                          precision=precision, threads=threads, clock=clock, seed=seed)
    try:
        report = run_eval_bench(cfg, progress=None if quiet else lambda m: click.echo(m, err=True))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    _emit(report, as_json, output, format_eval_table)


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
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Also write the JSON report here.")
def data_cmd(images, workers, models, model_batch, rounds, device, threads, as_json, output):
    """Loader images/s (decode every epoch vs decoded once; streamed vs prepared test sets) beside
    the model's own images/s, on 500x375 and 1024x768 JPEGs."""
    from glad.config import default_workers
    from glad.engine.bench_data import DataBenchConfig, format_data_table, run_data_bench

    cfg = DataBenchConfig(images=images, workers=tuple(workers) or tuple(dict.fromkeys((0, default_workers()))),
                          models=tuple(models) or DataBenchConfig.models, model_batch=model_batch, rounds=rounds,
                          device=device, threads=threads)
    report = run_data_bench(cfg, progress=lambda m: click.echo(m, err=True))
    _emit(report, as_json, output, format_data_table)
