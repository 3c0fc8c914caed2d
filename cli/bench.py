"""`glad bench ...`: benchmarks (subcommands are added by their owners below)."""

import click


@click.group()
def bench():
    """Time glad's ops and workloads against references and the copy bandwidth."""
