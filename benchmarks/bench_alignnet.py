"""`python benchmarks/bench_alignnet.py [OPTIONS]` is `glad bench alignnet [OPTIONS]` (glad/bench/alignnet.py)."""

import sys

from glad_cli.main import cli

if __name__ == "__main__":
    cli(["bench", "alignnet", *sys.argv[1:]], prog_name="glad")
