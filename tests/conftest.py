"""Shared test setup: CPU only, no network, Triton through its interpreter."""

import os

# Triton kernels run on the CPU only through the interpreter; must be set before triton loads.
os.environ.setdefault("TRITON_INTERPRET", "1")
# No test may download weights: make any hub access fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield
