"""The compiled backends (`cpu`, `cuda`): glad::* torch ops from glad._C, and their fake kernels.

glad._C declares the op schemas (TORCH_LIBRARY(glad, m)) with C++/OpenMP CPU
kernels and, when built with CUDA, multi-tensor CUDA kernels. The fake
(meta) implementations registered here let torch.compile trace the ops.
"""

import torch

_C = None
_error = None
try:
    from glad import _C  # noqa: F401  (registers the glad:: ops with torch)
except ImportError as exc:  # missing or broken build: other backends still work
    _error = f"glad._C is not built ({exc}); reinstall with `pip install . --no-build-isolation`"

OPS = ("sam_perturb_", "sam_restore_", "project_interpolate_")
if _C is not None and not all(hasattr(torch.ops.glad, op) for op in OPS):
    _error = "glad._C is out of date (it lacks the glad:: ops); rebuild with `make install`"
    _C = None
# Read once: pybind functions cannot be traced by torch.compile, and these never change.
BUILT = _C is not None
BUILT_WITH_CUDA = BUILT and bool(getattr(_C, "built_with_cuda", lambda: False)())


def native_status():
    """{'cpu': {...}, 'cuda': {...}}: availability and the reason when unavailable."""
    if not BUILT:
        return {"cpu": {"available": False, "reason": _error},
                "cuda": {"available": False, "reason": _error}}
    if not BUILT_WITH_CUDA:
        cuda = {"available": False, "built": False,
                "reason": "glad._C was built without CUDA (no nvcc / CUDA_HOME at build time)"}
    elif not torch.cuda.is_available():
        cuda = {"available": False, "built": True, "reason": "built with CUDA, but no CUDA device is visible"}
    else:
        cuda = {"available": True, "built": True,
                "reason": f"C++/CUDA multi-tensor kernels on {torch.cuda.get_device_name()}"}
    cpu = {"available": True, "reason": "C++ kernels, multi-threaded (OpenMP via ATen)"}
    return {"cpu": cpu, "cuda": cuda}


# The Python API has validated the lists (shapes, dtypes, one device, no aliasing).
def sam_perturb_(params, grads, backup, rho):
    return torch.ops.glad.sam_perturb_(params, grads, backup, rho)


def sam_restore_(params, backup):
    torch.ops.glad.sam_restore_(params, backup)


def project_interpolate_(grads, ref_grads, alpha, delta):
    return torch.ops.glad.project_interpolate_(grads, ref_grads, alpha, delta)


def _scalar(tensors, dtype):
    device = tensors[0].device if len(tensors) else torch.device("cpu")
    return torch.empty((), dtype=dtype, device=device)


if BUILT:

    @torch.library.register_fake("glad::sam_perturb_")
    def _sam_perturb_fake(params, grads, backup, rho):
        return _scalar(params, torch.float32), _scalar(params, torch.bool)

    @torch.library.register_fake("glad::sam_restore_")
    def _sam_restore_fake(params, backup):
        return None

    @torch.library.register_fake("glad::project_interpolate_")
    def _project_interpolate_fake(grads, ref_grads, alpha, delta):
        return _scalar(grads, torch.float32), _scalar(grads, torch.float32), _scalar(grads, torch.bool)
