"""The two-pass GradReg / SAM step around any torch optimizer (paper Algorithm 1)."""

from glad.optim.gradreg import MODES, GradReg, NonFiniteStepWarning

__all__ = ["GradReg", "MODES", "NonFiniteStepWarning"]
