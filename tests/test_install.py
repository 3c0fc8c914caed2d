"""The package, its entry points and its optional native extension."""

import json
import os
import shutil
import subprocess
import sys

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


def test_reference_backend_always_available():
    assert backend_info()["reference"]["available"]


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
