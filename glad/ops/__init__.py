"""Fused multi-tensor ops for GLAD's gradient regularisation (SPEC sections 2-3).

    state = sam_perturb_(params, grads, rho)          # p <- p + rho g / ||g||, backups kept
    state = sam_perturb_(params, grads, rho, backup=state.backup)  # reuse last step's buffers
    sam_restore_(params, state)                        # bit-exact undo
    stats = project_interpolate_(grads, ref_grads, alpha, delta=1e-12)
    backend_info()                                     # reference / cpu / cuda / triton
    FlatParams(params)                                 # one flat buffer per dtype/device

Every op takes `backend="auto"` (fastest available for the tensors' device:
cpu > reference on CPU, cuda > triton > reference on GPU; the GLAD_OPS_BACKEND
environment variable overrides it). Global sums accumulate in float32 or wider,
are deterministic (fixed chunks, fixed order), and stay on the device: the
returned statistics are 0-d device tensors, so a step needs no host sync.
"""

from glad.ops._api import project_interpolate_, sam_perturb_, sam_restore_
from glad.ops._dispatch import BACKENDS, backend_info
from glad.ops._types import ProjectStats, SamState
from glad.ops.flat import FlatParams

__all__ = [
    "BACKENDS",
    "FlatParams",
    "ProjectStats",
    "SamState",
    "backend_info",
    "project_interpolate_",
    "sam_perturb_",
    "sam_restore_",
]
