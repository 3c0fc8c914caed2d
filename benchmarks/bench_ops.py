"""glad.ops backends vs reference, a naive per-tensor loop and a same-device copy.

The same benchmark as `glad bench ops` (the logic lives in glad.ops.bench), as a
script that writes its JSON report:

    python benchmarks/bench_ops.py --sizes adapter,16M,64M --repeat 7 \
        --output benchmarks/results/ops_cpu.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

import torch

from glad.ops.bench import format_table, run_ops_bench, write_json


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="adapter,16M,64M")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--backends", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default=None, help="write the JSON report here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    report = run_ops_bench(
        sizes=[s for s in args.sizes.split(",") if s],
        dtype=getattr(torch, args.dtype),
        device=args.device,
        backends=args.backends.split(",") if args.backends else None,
        repeat=args.repeat,
        warmup=args.warmup,
        threads=args.threads,
        command=shlex.join(["python", "benchmarks/bench_ops.py", *(sys.argv[1:] if argv is None else argv)]),
    )
    if args.output:
        write_json(report, args.output)
    print(json.dumps(report, indent=2) if args.json else format_table(report))


if __name__ == "__main__":
    main()
