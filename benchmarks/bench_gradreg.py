"""`python benchmarks/bench_gradreg.py [OPTIONS]` is `glad bench gradreg [OPTIONS]` (glad/bench/gradreg.py)."""

import sys

from glad_cli.main import cli

if __name__ == "__main__":
    cli(["bench", "gradreg", *sys.argv[1:]], prog_name="glad")
