"""What a user's machine holds: a CoOp data root and OpenAI's ViT-B-16 weights, laid out as
the real ones are (random weights, tiny images), and a way to run shell commands there.

    home = make_user_home(tmp)            # tmp/data/<15 CoOp folders>, tmp/.cache/huggingface/...
    run_shell("glad train ...", home)     # bash in `home` with HOME=home, offline, glad on PATH

The weights exist twice: as the file open_clip itself caches for `--pretrained openai`
(`models--timm--vit_base_patch16_clip_224.openai/snapshots/<rev>/open_clip_model.safetensors`)
and as a plain state-dict file in OpenAI's key layout (`weights/ViT-B-16-state.pt`, whose name
says nothing about its origin).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from data_fixtures import make_all_coop

HF_REPO_FOLDER = "models--timm--vit_base_patch16_clip_224.openai"
REVISION = "5bd3f5e1a0c3b4d2e6f70812a3b4c5d6e7f80912"
# OpenAI's checkpoints carry these scalars beside the weights.
OPENAI_SCALARS = {"input_resolution": 224, "context_length": 77, "vocab_size": 49408}
BIN = Path(sys.executable).parent  # the venv's bin folder: `glad` and `torchrun`


@dataclass
class UserHome:
    home: Path
    data: Path
    hf_weights: Path  # the file open_clip caches for ViT-B-16 `openai`
    state_dict_file: Path  # the same weights as a plain OpenAI-layout state dict


def openai_vitb16_state_dict() -> dict[str, torch.Tensor]:
    """A ViT-B-16 with random weights (seeded), keys as in OpenAI's checkpoints."""
    import open_clip

    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "no pretrained weights" line
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = open_clip.create_model("ViT-B-16", force_quick_gelu=True)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def make_user_home(home: Path, n_classes: int = 2, per_class=(2, 1, 1)) -> UserHome:
    """A home folder with ~/data (all 15 CoOp datasets) and the Hugging Face cache holding ViT-B-16."""
    from safetensors.torch import save_file

    home = Path(home)
    data = home / "data"
    make_all_coop(data, n_classes=n_classes, per_class=per_class)
    sd = openai_vitb16_state_dict()
    repo = home / ".cache" / "huggingface" / "hub" / HF_REPO_FOLDER
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    hf_weights = snapshot / "open_clip_model.safetensors"
    save_file(sd, str(hf_weights))
    plain = home / "weights" / "ViT-B-16-state.pt"
    plain.parent.mkdir()
    torch.save({**sd, **{k: torch.tensor(v) for k, v in OPENAI_SCALARS.items()}}, plain)
    return UserHome(home, data, hf_weights, plain)


def user_env(home: Path) -> dict[str, str]:
    """The environment of a user on an offline machine: their HOME, glad on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLAD_", "HF_", "TORCHELASTIC"))}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    env.pop("XDG_CACHE_HOME", None)
    return env


def run_shell(command: str, home: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `command` with bash in `home`, as the user would type it."""
    return subprocess.run(["bash", "-c", command], cwd=home, env=user_env(home), capture_output=True, text=True,
                          timeout=timeout)
