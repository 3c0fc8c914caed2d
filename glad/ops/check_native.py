"""`python -m glad.ops.check_native`: fail (exit 1, one line) when the native backends the
install was asked to build are missing, so a broken C++ or CUDA build is never a quiet skip.

What was asked for comes from the build's own switches: ``GLAD_BUILD_EXT`` (``0``: nothing;
``auto`` or ``1``: the C++ extension) and ``GLAD_BUILD_CUDA=1`` with ``CUDA_HOME`` holding
nvcc (the CUDA kernels too).
"""

from __future__ import annotations

import os
import sys


def problems(env=os.environ) -> list[str]:
    from glad.ops import backend_info

    if env.get("GLAD_BUILD_EXT", "auto").strip().lower() == "0":
        return []
    info = backend_info()
    found = []
    if not info["cpu"]["available"]:
        found.append(f"the C++ extension was asked for but is missing: {info['cpu']['reason']}")
    cuda_home = env.get("CUDA_HOME")
    if env.get("GLAD_BUILD_CUDA") == "1" and cuda_home and os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        if not info["cuda"].get("built"):
            found.append(f"the CUDA kernels were asked for (GLAD_BUILD_CUDA=1) but not compiled: "
                         f"{info['cuda']['reason']}")
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(f"glad: native build: {line}; run `make clean install` and read the compiler's output", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
