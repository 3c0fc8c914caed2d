"""`python benchmarks/bench_eval.py [OPTIONS]` is `glad bench eval [OPTIONS]` (glad/bench/eval.py)."""

import sys

from glad_cli.main import cli

if __name__ == "__main__":
    cli(["bench", "eval", *sys.argv[1:]], prog_name="glad")
