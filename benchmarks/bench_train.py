"""`python benchmarks/bench_train.py [OPTIONS]` is `glad bench train [OPTIONS]` (glad/bench/train.py)."""

import sys

from glad_cli.main import cli

if __name__ == "__main__":
    cli(["bench", "train", *sys.argv[1:]], prog_name="glad")
