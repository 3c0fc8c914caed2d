"""`glad bench ...`: benchmarks (subcommands are added by their owners below)."""

import click


@click.group()
def bench():
    """Time glad's ops and workloads against references and the copy bandwidth."""


@bench.command("ops")
@click.option("--sizes", default=None,
              help="Comma list: 'adapter' (150 tensors, 1.1M values) and/or value counts like 16M, 500k "
                   "(default: adapter,16M,64M on a CPU; adapter,64M,256M on a GPU, beyond its L2 cache).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32")
@click.option("--device", default=None, help="cpu or cuda[:i] (default: cuda when available).")
@click.option("--backends", default=None, help="Comma list (default: every available backend on the device).")
@click.option("--repeat", type=click.IntRange(1), default=3, help="Timed rounds per size (the best is reported).")
@click.option("--warmup", type=click.IntRange(0), default=1, help="Untimed rounds per size.")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch.set_num_threads for CPU runs.")
@click.option("--calls", type=click.IntRange(1), default=None,
              help="Back-to-back calls per timing on a GPU, between CUDA events (default 20; 1 on a CPU).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Also write the JSON report here.")
def ops_cmd(sizes, dtype, device, backends, repeat, warmup, threads, calls, as_json, output):
    """glad.ops backends vs reference, a naive per-tensor loop and a same-device copy."""
    import json
    import shlex
    import sys

    import torch

    from glad.ops.bench import format_table, run_ops_bench, write_json

    try:
        on_gpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        sizes = sizes or ("adapter,64M,256M" if on_gpu else "adapter,16M,64M")
        report = run_ops_bench(
            sizes=[s.strip() for s in sizes.split(",") if s.strip()],
            calls=calls,
            dtype=getattr(torch, dtype),
            device=device,
            backends=[b.strip() for b in backends.split(",")] if backends else None,
            repeat=repeat,
            warmup=warmup,
            threads=threads,
            command=shlex.join(["glad", *sys.argv[1:]]),
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if output:
        write_json(report, output)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        m = report["machine"]
        click.echo(f"{m['cpu']} ({m['cpu_count']} CPUs, {m['torch_threads']} torch threads), "
                   f"device {m['device']}, {report['config']['dtype']}")
        click.echo(format_table(report))
