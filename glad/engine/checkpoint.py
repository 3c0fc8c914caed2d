"""Training checkpoints that survive a kill at any moment.

A checkpoint is a folder `step-<n>/` holding `trainable.safetensors` (LoRA and
AlignNet weights) and `state.pt` (optimizer, scheduler, RNG and position; plain
tensors and numbers, loadable with `weights_only=True`). It is written under a
temporary name and renamed into place; the file `latest` then names it, and only
then are older ones removed. A kill at any moment leaves `latest` naming a
complete checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import torch
from safetensors.torch import load_file, save_file

from glad.io import atomic_write_text


class Checkpointer:
    def __init__(self, folder: str, keep: int = 1):
        self.folder = folder
        self.keep = keep

    def save(self, step: int, tensors: dict[str, torch.Tensor], state: dict) -> None:
        os.makedirs(self.folder, exist_ok=True)
        name = self._fresh_name(step)
        tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=self.folder)
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                      os.path.join(tmp, "trainable.safetensors"))
            torch.save(state, os.path.join(tmp, "state.pt"))
            os.replace(tmp, os.path.join(self.folder, name))
        finally:
            if os.path.exists(tmp):
                shutil.rmtree(tmp)
        # Only now does `latest` move, and only then are older checkpoints removed: a kill at any
        # moment leaves `latest` naming a complete folder (a step saved twice, at a checkpoint and
        # at the epoch's end, gets a second folder rather than replacing the one `latest` names).
        atomic_write_text(os.path.join(self.folder, "latest"), name + "\n")
        self._prune(keep_name=name)

    def _fresh_name(self, step: int) -> str:
        name = f"step-{step:09d}"
        n = 0
        while os.path.exists(os.path.join(self.folder, name if n == 0 else f"{name}.{n}")):
            n += 1
        return name if n == 0 else f"{name}.{n}"

    def load_latest(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(tensors, state) of the newest complete checkpoint, or None when there is none."""
        pointer = os.path.join(self.folder, "latest")
        if not os.path.exists(pointer):
            return None
        with open(pointer, encoding="utf-8") as f:
            path = os.path.join(self.folder, f.read().strip())
        tensors = load_file(os.path.join(path, "trainable.safetensors"))
        state = torch.load(os.path.join(path, "state.pt"), map_location="cpu", weights_only=True)
        return tensors, state

    def _prune(self, keep_name: str) -> None:
        names = sorted((n for n in os.listdir(self.folder) if n.startswith("step-")), key=_order)
        for old in names[: max(0, len(names) - self.keep)]:
            if old != keep_name:
                shutil.rmtree(os.path.join(self.folder, old), ignore_errors=True)
        for stray in os.listdir(self.folder):  # temporary folders of a killed save
            if stray.startswith(".step-"):
                shutil.rmtree(os.path.join(self.folder, stray), ignore_errors=True)


def _order(name: str) -> tuple[int, int]:
    """(step, save) of a checkpoint folder name `step-<n>` or `step-<n>.<k>`."""
    step, _, again = name[len("step-"):].partition(".")
    return int(step), int(again or 0)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
