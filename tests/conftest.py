"""Shared test setup: CPU only, no network, Triton through its interpreter."""

import os

import pytest  # noqa: E402
import torch  # noqa: E402  (imports no triton: the variable below is still read in time)

# Triton kernels run on a CPU only through the interpreter; where a GPU is visible they are
# compiled for it (interpreting there would hide what the GPU tests are for).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# No test may download weights: make any hub access fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-model tests: more threads only add contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def user_home(tmp_path_factory):
    """A user's home: ~/data with the 15 CoOp datasets, OpenAI's ViT-B-16 (random weights) in the
    Hugging Face cache and as a plain state-dict file (see user_fixtures)."""
    from user_fixtures import make_user_home

    return make_user_home(tmp_path_factory.mktemp("user"))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny open_clip model registered by name (engine_fixtures.TINY_MODEL); its config file."""
    from engine_fixtures import register_tiny_model

    return register_tiny_model(tmp_path_factory.mktemp("models"))
