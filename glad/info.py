"""What this installation is: versions and available op backends."""


def collect_info():
    import torch

    import glad
    from glad.ops import backend_info
    from glad.provenance import package_version

    versions = {
        "glad": glad.__version__,
        "torch": torch.__version__,
        "open_clip": package_version("open_clip_torch"),
        "triton": package_version("triton"),
        "cuda(torch)": str(torch.version.cuda),
    }
    return {"versions": versions, "backends": backend_info()}
