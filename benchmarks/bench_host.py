"""`python benchmarks/bench_host.py [OPTIONS]` is `glad bench host [OPTIONS]` (glad/bench/host.py)."""

import sys

from glad_cli.main import cli

if __name__ == "__main__":
    cli(["bench", "host", *sys.argv[1:]], prog_name="glad")
