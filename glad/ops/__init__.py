"""Fused multi-tensor ops for GLAD's gradient regularisation (SPEC sections 2-3).

    state = sam_perturb_(params, grads, rho)          # p <- p + rho g / ||g||, backups kept
    sam_restore_(params, state)                        # bit-exact undo
    stats = project_interpolate_(grads, ref_grads, alpha, delta=1e-12)
    backend_info()                                     # reference / cpu / cuda / triton
    FlatParams(params)                                 # one flat buffer per dtype/device

Every op takes `backend="auto"` (fastest available for the tensors' device;
the GLAD_OPS_BACKEND environment variable overrides it).
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
