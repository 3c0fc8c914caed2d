"""`python benchmarks/bench_text.py [OPTIONS]` is `glad bench text [OPTIONS]` (glad/bench/text.py)."""

import sys

from glad_cli.main import cli

if __name__ == "__main__":
    cli(["bench", "text", *sys.argv[1:]], prog_name="glad")
