"""Fused multi-tensor ops for GLAD's gradient regularisation (placeholder, see issue #3)."""

from glad.ops._native import native_status


def backend_info():
    """Which backends exist here and, for each missing one, why."""
    info = {"reference": {"available": True, "reason": "plain torch"}}
    info.update(native_status())
    return info
