"""`python benchmarks/bench_ops.py [OPTIONS]` is `glad bench ops [OPTIONS]` (glad/bench/ops.py)."""

import sys

from glad_cli.main import cli

if __name__ == "__main__":
    cli(["bench", "ops", *sys.argv[1:]], prog_name="glad")
