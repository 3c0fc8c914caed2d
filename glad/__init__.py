"""glad: Generalizable LoRA tuning of CLIP with regularized gradients (GLAD)."""

__version__ = "0.1.0"
