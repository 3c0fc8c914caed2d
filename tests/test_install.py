"""The package, its entry points and its optional native extension."""

import json
import os
import shutil
import subprocess
import sys

import pytest

import glad
from glad.ops import backend_info


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_python_dash_m_glad_info_json():
    proc = _run("-m", "glad", "info", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["versions"]["glad"] == glad.__version__
    assert set(data["backends"]) >= {"reference", "cpu", "cuda", "triton"}
    for entry in data["backends"].values():
        assert isinstance(entry["available"], bool) and entry["reason"]


def test_reference_backend_is_listed_and_runs():
    """The reference backend is what every install has: listed with its reason, and computing
    the projection (checked against float64 by hand)."""
    import torch

    from glad.ops import project_interpolate_

    info = backend_info()["reference"]
    assert info["available"] and "torch" in info["reason"]
    g, r = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    project_interpolate_([g], [r], 0.5, 0.0, backend="reference")
    # <g, r> = -1 < 0: r' = r - (-1 / 1) g = (0, 1); g_f = 0.5 g + 0.5 r' = (0.5, 0.5)
    assert torch.equal(g, torch.tensor([0.5, 0.5]))


def test_console_script_installed():
    script = shutil.which("glad", path=os.path.dirname(sys.executable))
    assert script, "the `glad` console script is not installed next to this Python"
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "info" in proc.stdout


def test_cli_package_installed_under_its_own_name(tmp_path):
    import glad_cli

    assert os.path.basename(os.path.dirname(glad_cli.__file__)) == "cli"
    # Run outside the source tree, where the `cli/` folder itself is not on sys.path.
    proc = _run("-c", "import cli", cwd=tmp_path)
    assert proc.returncode != 0, "a bare `cli` package must not be importable"


def test_cuda_state_is_explained():
    cuda = backend_info()["cuda"]
    if not cuda["available"]:
        assert "CUDA" in cuda["reason"] or "glad._C" in cuda["reason"]


@pytest.mark.slow
def test_pure_python_install_runs_on_the_reference_backend(tmp_path):
    """GLAD_BUILD_EXT=0: no glad._C, yet the package imports and its ops run."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = tmp_path / "site"
    env = {**os.environ, "GLAD_BUILD_EXT": "0"}
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), root], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not list(target.glob("glad/_C*")), "GLAD_BUILD_EXT=0 must build no extension"
    code = (
        # This environment may hold an editable install of glad: drop its import hook.
        "import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        "import torch, glad, glad.ops as ops\n"
        f"assert glad.__file__.startswith({str(target)!r}), glad.__file__\n"
        "info = ops.backend_info()\n"
        "assert info['reference']['available'] and not info['cpu']['available'], info\n"
        "g = [torch.randn(5), torch.randn(3, 4)]; r = [torch.randn(5), torch.randn(3, 4)]\n"
        "ops.project_interpolate_(g, r, 0.5)\n"
        "print('ok', info['cpu']['reason'])\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(target)}, timeout=300)
    assert run.returncode == 0 and run.stdout.startswith("ok"), run.stderr[-2000:]


@pytest.mark.slow
def test_sdist_builds_a_wheel_named_glad_clip(tmp_path):
    """The distribution is glad-clip (`glad` on the index is another project): the sdist carries
    the native sources, and pip builds from it a wheel whose import name and command are glad's."""
    import tarfile
    import zipfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = _run("-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path / "dist"), root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [sdist] = (tmp_path / "dist").glob("glad_clip-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    assert any(n.endswith("csrc/multi_tensor.h") for n in names) and any(n.endswith("csrc/glad.cpp") for n in names)
    env = {**os.environ, "GLAD_BUILD_EXT": "1", "GLAD_BUILD_CUDA": "0"}  # the C++ build must succeed from it
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "--wheel-dir", str(tmp_path / "wheels"), str(sdist)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [wheel] = (tmp_path / "wheels").glob("glad_clip-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        files = whl.namelist()
        meta = whl.read(next(n for n in files if n.endswith(".dist-info/METADATA"))).decode()
        entry = whl.read(next(n for n in files if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "Name: glad-clip" in meta and f"Version: {glad.__version__}" in meta
    assert "glad = glad_cli.main:main" in entry
    assert "glad/__init__.py" in files and "glad_cli/main.py" in files
    assert any(n.startswith("glad/_C") and n.endswith(".so") for n in files)


def test_a_missing_native_build_that_was_asked_for_fails_make_test(monkeypatch):
    """`make test` first runs glad.ops.check_native: a C++ build that failed (or CUDA kernels
    asked for and not compiled) is an error naming it, not a quiet skip of the native tests."""
    from glad.ops import check_native

    missing = {"reference": {"available": True}, "triton": {"available": True},
               "cpu": {"available": False, "reason": "glad._C is not built (no module)"},
               "cuda": {"available": False, "built": False, "reason": "glad._C is not built (no module)"}}
    monkeypatch.setattr("glad.ops.backend_info", lambda: missing)
    assert check_native.problems({"GLAD_BUILD_EXT": "0"}) == []  # nothing was asked for
    [cpu] = check_native.problems({})
    assert "C++ extension was asked for" in cpu and "glad._C is not built" in cpu
    cuda_home = os.path.dirname(os.path.dirname(shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"))
    if os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        found = check_native.problems({"GLAD_BUILD_CUDA": "1", "CUDA_HOME": cuda_home})
        assert len(found) == 2 and "GLAD_BUILD_CUDA=1" in found[1]
    proc = _run("-m", "glad.ops.check_native")  # this install: what it was asked for is there
    assert proc.returncode == 0, proc.stderr
