"""`python benchmarks/bench_world.py [OPTIONS]` is `glad bench world [OPTIONS]` (glad/bench/world.py)."""

import sys

from glad_cli.main import cli

if __name__ == "__main__":
    cli(["bench", "world", *sys.argv[1:]], prog_name="glad")
