"""Which backend runs a call: availability per device, `auto`, and GLAD_OPS_BACKEND."""

from __future__ import annotations

import importlib.util
import os
import warnings

import torch

from glad.ops import _native

BACKENDS = ("reference", "cpu", "cuda", "triton")
ENV_VAR = "GLAD_OPS_BACKEND"
# Fastest first, per device type. Triton on CPU is the interpreter: for tests, never `auto`.
_AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton", "reference")}


def _triton_interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _triton_status():
    if importlib.util.find_spec("glad.ops._triton") is None:
        return {"available": False, "reason": "this glad has no Triton kernels (glad/ops/_triton.py)"}
    if importlib.util.find_spec("triton") is None:
        return {"available": False, "reason": "triton is not installed (`pip install triton`)"}
    if torch.cuda.is_available():
        return {"available": True, "reason": f"Triton on {torch.cuda.get_device_name()}"}
    if _triton_interpreting():
        return {"available": True, "reason": "Triton interpreter on CPU (TRITON_INTERPRET=1; slow, for tests)"}
    return {"available": False,
            "reason": "no CUDA device; Triton runs on CPU only under TRITON_INTERPRET=1 (for tests)"}


def backend_info():
    """Which backends exist here and, for each missing one, why.

    Returns {name: {"available": bool, "reason": str, ...}} for reference, cpu, cuda and triton.
    """
    info = {"reference": {"available": True, "reason": "plain torch (foreach ops), any device"}}
    info.update(_native.native_status())
    info["triton"] = _triton_status()
    return info


# (backend, device) -> None when a tiny call ran there, else why not. A CUDA build without
# this GPU's architecture (a card newer than the arch list) fails only when a kernel launches.
_probed: dict[tuple[str, str], str | None] = {}


def _probe_call(name, device):
    """One tiny call of backend `name` on `device`, waited for (raises what the kernels raise)."""
    g, r = [torch.ones(3, device=device)], [torch.ones(3, device=device)]
    implementation(name).project_interpolate_(g, r, 0.5, 1e-12)
    torch.cuda.synchronize(device)


def _probe(name, device):
    """None when backend `name` runs on this CUDA device; else the reason (warned about once)."""
    if torch.compiler.is_compiling():
        return None
    key = (name, str(device if device.index is not None else torch.device("cuda", torch.cuda.current_device())))
    if key not in _probed:
        try:
            _probe_call(name, device)
            _probed[key] = None
        except Exception as e:  # noqa: BLE001 - whatever the driver says is the reason
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            try:
                major, minor = torch.cuda.get_device_capability(device)
                arch = f"{major}.{minor}"
            except Exception:  # noqa: BLE001
                arch = "this GPU's"
            _probed[key] = (f"its kernels do not run on {key[1]} ({type(e).__name__}: {first}); rebuild "
                            f"glad._C for it: TORCH_CUDA_ARCH_LIST={arch} pip install . --no-build-isolation")
            warnings.warn(f"glad.ops: the {name} backend {_probed[key]}; `auto` uses the next backend",
                          RuntimeWarning, stacklevel=4)
    return _probed[key]


def _supports(name, device):
    """None when `name` can run on `device`, else the reason it cannot."""
    kind = device.type
    if name == "reference":
        return None
    if name == "cpu":
        if kind != "cpu":
            return f"the cpu backend runs on CPU tensors, these are on {device}"
        return None if _native.BUILT else _native.native_status()["cpu"]["reason"]
    if name == "cuda":
        if kind != "cuda":
            return f"the cuda backend runs on CUDA tensors, these are on {device}"
        if not _native.BUILT_WITH_CUDA:
            return _native.native_status()["cuda"]["reason"]
        return _probe("cuda", device)
    if name == "triton":
        if kind not in ("cuda", "cpu"):
            return f"the triton backend runs on CUDA tensors, these are on {device}"
        status = _triton_status()
        if not status["available"]:
            return status["reason"]
        if kind == "cpu" and not _triton_interpreting():
            return "Triton runs on CPU tensors only under TRITON_INTERPRET=1"
        return None
    raise AssertionError(name)


def resolve(backend, device):
    """The backend name to use for tensors on `device` ("auto" honours GLAD_OPS_BACKEND)."""
    source = "backend="
    if backend is None or backend == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env and env != "auto":
            backend, source = env, f"{ENV_VAR}="
        else:
            for name in _AUTO_ORDER.get(device.type, ("reference",)):
                if _supports(name, device) is None:
                    return name
            return "reference"
    if backend not in BACKENDS:
        raise ValueError(f"{source}{backend!r} is not a glad.ops backend; choose one of "
                         f"{', '.join(('auto',) + BACKENDS)}.")
    why = _supports(backend, device)
    if why is not None:
        raise RuntimeError(f"{source}{backend!r} cannot run here: {why}. Use backend='auto' or "
                           f"one of the available backends listed by glad.ops.backend_info().")
    return backend


def implementation(name):
    """The module implementing backend `name` (imported on first use)."""
    if name == "reference":
        from glad.ops import _reference as impl
    elif name in ("cpu", "cuda"):
        impl = _native
    else:
        from glad.ops import _triton as impl
    return impl
