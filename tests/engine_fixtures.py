"""A tiny open_clip model registered by name, a launcher for subprocess runs, and common flags."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from glad.models.testing import tiny_clip_config

TINY_MODEL = "glad-test-tiny"


def register_tiny_model(folder: Path) -> Path:
    """Register TINY_MODEL with open_clip (this process); returns its config file for launchers."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{TINY_MODEL}.json"
    path.write_text(json.dumps(tiny_clip_config()))
    open_clip.add_model_config(path)
    return path


def write_launcher(folder: Path, config_path: Path) -> Path:
    """A script that registers the tiny model, then runs the `glad` command line."""
    script = folder / "glad_launch.py"
    script.write_text(
        "import sys, open_clip\n"
        f"open_clip.add_model_config({str(config_path)!r})\n"
        "from glad_cli.main import main\n"
        "sys.argv[0] = 'glad'\n"
        "main()\n")
    return script


def base_flags(data_root: Path, output: Path, **extra) -> list[str]:
    flags = {"--model": TINY_MODEL, "--pretrained": "none", "--data-root": str(data_root),
             "--output": str(output), "--shots": "2", "--epochs": "2", "--batch-size": "4",
             "--workers": "0", "--eval-batch-size": "16", "--device": "cpu", "--lr": "0.01"}
    flags.update({k: str(v) for k, v in extra.items()})
    out = []
    for k, v in flags.items():
        out += [k, v]
    return out


PYTHON = sys.executable
