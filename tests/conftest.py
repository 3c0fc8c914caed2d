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


@pytest.fixture(autouse=True)
def _keep_threads():
    """A test that changes torch's thread count (glad bench, --threads) gives it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """GLAD_CACHE in this test's own temporary folder (never the home cache); the folder."""
    from data_fixtures import make_env_cache

    return make_env_cache(monkeypatch, tmp_path)


@pytest.fixture(scope="session")
def coop_root(tmp_path_factory):
    """A CoOp data root: oxford_pets, dtd, imagenet, eurosat and imagenet_a, a few images each."""
    from data_fixtures import make_coop_dataset

    root = tmp_path_factory.mktemp("data")
    make_coop_dataset(root, "oxford_pets", n_classes=5, per_class=(4, 2, 3))
    make_coop_dataset(root, "dtd", n_classes=4, per_class=(4, 2, 3))
    make_coop_dataset(root, "imagenet", n_classes=4, per_class=(4, 2, 3))
    make_coop_dataset(root, "eurosat", n_classes=3, per_class=(2, 2, 3))
    make_coop_dataset(root, "imagenet_a", n_classes=4, per_class=(0, 0, 2))
    return root


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
