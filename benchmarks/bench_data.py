"""`python benchmarks/bench_data.py [OPTIONS]` is `glad bench data [OPTIONS]` (glad/bench/data.py)."""

import sys

from glad_cli.main import cli

if __name__ == "__main__":
    cli(["bench", "data", *sys.argv[1:]], prog_name="glad")
