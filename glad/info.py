"""What this installation is: versions and available op backends."""

import importlib.metadata


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def collect_info():
    import torch

    import glad
    from glad.ops import backend_info

    versions = {
        "glad": glad.__version__,
        "torch": torch.__version__,
        "open_clip": _version("open_clip_torch"),
        "triton": _version("triton"),
        "cuda(torch)": str(torch.version.cuda),
    }
    return {"versions": versions, "backends": backend_info()}
