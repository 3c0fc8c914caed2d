"""Loads the optional compiled extension glad._C and remembers why it is missing."""

import torch

_C = None
_error = None
try:
    from glad import _C  # noqa: F401  (registers the glad:: ops with torch)
except ImportError as exc:  # missing or broken build: other backends still work
    _error = f"glad._C is not built ({exc}); reinstall with `pip install . --no-build-isolation`"


def native_status():
    """{'cpu': {...}, 'cuda': {...}}: availability and the reason when unavailable."""
    if _C is None:
        return {"cpu": {"available": False, "reason": _error},
                "cuda": {"available": False, "reason": _error}}
    built_cuda = bool(getattr(_C, "built_with_cuda", lambda: False)())
    if not built_cuda:
        cuda = {"available": False, "reason": "glad._C was built without CUDA (no nvcc / CUDA_HOME at build time)"}
    elif not torch.cuda.is_available():
        cuda = {"available": False, "built": True, "reason": "built with CUDA, but no CUDA device is visible"}
    else:
        cuda = {"available": True, "built": True, "reason": torch.cuda.get_device_name()}
    return {"cpu": {"available": True, "reason": "C++/OpenMP"}, "cuda": cuda}
