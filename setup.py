"""Builds the optional native extension ``glad._C`` from ``csrc/``.

Everything else (metadata, dependencies, the ``glad`` script) lives in
pyproject.toml. The extension is optional: when it cannot be built, glad
installs as a pure-Python package and falls back to its other backends.

    GLAD_BUILD_EXT=auto  (default) build C++ (and CUDA when nvcc is found); warn on failure
    GLAD_BUILD_EXT=1     build, and fail the install if the build fails
    GLAD_BUILD_EXT=0     build nothing

Install with ``pip install . --no-build-isolation`` so the extension is
compiled against the torch already installed (an isolated build would
download and compile against a different torch).
"""

import glob
import os
import sys
import warnings

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
MODE = os.environ.get("GLAD_BUILD_EXT", "auto").strip().lower()
if MODE not in ("0", "1", "auto"):
    sys.exit(f"GLAD_BUILD_EXT={MODE!r} is not one of 0, 1, auto")


DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def _gpu_visible() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _find_cuda_home():
    """Where the CUDA toolkit lives, or None.

    torch guesses CUDA_HOME from the `nvcc` on PATH; when that `nvcc` is a
    wrapper script the guess is wrong, so prefer a folder that really holds
    the toolkit's headers.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for home in candidates:
        if home and os.path.exists(os.path.join(home, "include", "cuda_runtime.h")) and os.path.exists(
            os.path.join(home, "bin", "nvcc")
        ):
            return home
    return None


def _extensions():
    if MODE == "0":
        return [], {}
    cuda_home = _find_cuda_home() if os.environ.get("GLAD_BUILD_CUDA", "1") != "0" else None
    if cuda_home:
        # Must be set before torch.utils.cpp_extension is imported: it reads CUDA_HOME once.
        os.environ["CUDA_HOME"] = cuda_home
        # No GPU is needed to compile; without one torch cannot guess the arch list. PTX of
        # the newest arch lets newer cards JIT the kernels; with a GPU visible, torch builds
        # for that GPU (and glad probes the kernels at first use either way).
        if not _gpu_visible():
            os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
    try:
        from torch.utils import cpp_extension
    except ImportError:
        warnings.warn("torch is not importable at build time: building glad without glad._C. "
                      "Install torch first and use `pip install --no-build-isolation`.")
        return [], {}

    cpp_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    if not cpp_sources:
        return [], {}
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    cxx_flags = ["-O3", *openmp]  # torch picks the C++ standard it needs
    ext = cpp_extension.CppExtension(
        "glad._C", cpp_sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=openmp
    )
    if cuda_home and cuda_sources:
        ext = cpp_extension.CUDAExtension(
            "glad._C",
            cpp_sources + cuda_sources,
            extra_compile_args={"cxx": cxx_flags + ["-DGLAD_WITH_CUDA"],
                                "nvcc": ["-O3", "-lineinfo"]},
            extra_link_args=openmp,
        )
    return [ext], {"build_ext": _optional_build_ext(cpp_extension.BuildExtension, cxx_flags)}


def _optional_build_ext(base, cpu_cxx_flags):
    class OptionalBuildExt(base):
        """Never lets a failed native build break the install (unless GLAD_BUILD_EXT=1).

        torch's ninja build raises RuntimeError, which setuptools' `optional`
        flag does not catch. A failed CUDA build is retried CPU-only.
        """

        def run(self):
            try:
                super().run()
                return
            except Exception as exc:  # noqa: BLE001 - any build failure must leave a package
                if MODE == "1":
                    raise
                first = exc
            ext = self.extensions[0]
            if any(src.endswith(".cu") for src in ext.sources):
                warnings.warn(f"CUDA build of glad._C failed ({type(first).__name__}: {first}); "
                              "retrying with the C++ CPU kernels only.")
                ext.sources = [src for src in ext.sources if not src.endswith(".cu")]
                ext.extra_compile_args = {"cxx": cpu_cxx_flags}
                try:
                    super().run()
                    return
                except Exception as exc:  # noqa: BLE001
                    first = exc
            warnings.warn(f"glad._C was not built ({type(first).__name__}: {first}); "
                          "glad will use its pure-Python/Triton backends. "
                          "Set GLAD_BUILD_EXT=1 to make this an error.")

    return OptionalBuildExt.with_options(use_ninja=True)


ext_modules, cmdclass = _extensions()

setup(
    packages=find_packages(include=["glad", "glad.*"]) + ["glad_cli"],
    package_dir={"glad_cli": "cli"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
