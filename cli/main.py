"""`glad` command line: parses options, builds configs, calls glad.engine. No logic lives here."""

import json
import platform

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="glad")
@click.option("-v", "--verbose", is_flag=True, help="Also show other libraries' info lines (open_clip's model loading).")
def cli(verbose):
    """GLAD: generalizable LoRA tuning of CLIP with regularized gradients."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(as_json):
    """Versions, and which glad.ops backends are available (and why not)."""
    from glad.info import collect_info

    data = collect_info()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for name, version in data["versions"].items():
        click.echo(f"{name:<12} {version}")
    click.echo(f"{'python':<12} {platform.python_version()}")
    click.echo("backends:")
    for name, entry in data["backends"].items():
        mark = "yes" if entry["available"] else "no "
        click.echo(f"  {name:<10} {mark}  {entry['reason']}")


from glad_cli.bench import bench  # noqa: E402
from glad_cli.train import evaluate_cmd, report, train  # noqa: E402
from glad_cli.use import export, predict  # noqa: E402

for command in (train, evaluate_cmd, report, predict, export, bench):
    cli.add_command(command)


def main():
    cli()


if __name__ == "__main__":
    main()
