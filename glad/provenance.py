"""Where a number or an artifact came from: the machine, the versions, the git commit.

One place for what every results record, run config and benchmark report carries.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess

import torch


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit glad runs from (None outside a git checkout); asked once a process."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
                             capture_output=True, text=True, timeout=10)
        return (out.stdout.strip() or None) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict:
    import glad

    return {"glad": glad.__version__, "torch": torch.__version__, "open_clip": package_version("open_clip_torch"),
            "git_commit": git_commit()}


def machine_info(device) -> dict:
    """CPU model, cores, threads, load, accelerator, platform and versions: what numbers depend on."""
    device = torch.device(device)
    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(device), "platform": platform.platform(), "python": platform.python_version(),
            **versions()}
    if hasattr(os, "getloadavg"):
        info["load_average_1min_at_start"] = round(os.getloadavg()[0], 2)
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info
