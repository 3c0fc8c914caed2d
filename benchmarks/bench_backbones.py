"""`python benchmarks/bench_backbones.py [OPTIONS]` is `glad bench backbones [OPTIONS]` (glad/bench/backbones.py)."""

import sys

from glad_cli.main import cli

if __name__ == "__main__":
    cli(["bench", "backbones", *sys.argv[1:]], prog_name="glad")
