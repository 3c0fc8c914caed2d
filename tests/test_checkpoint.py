"""Training checkpoints survive a kill at any moment, also when one step is saved twice."""

from __future__ import annotations

import os

import pytest
import torch

from glad.engine import checkpoint as ckpt


def test_a_step_saved_twice_never_leaves_latest_naming_a_broken_folder(tmp_path, monkeypatch):
    """A checkpoint and the epoch's end can save the same step; a kill during the second save
    (here: before `latest` moves) must leave the first one whole and named by `latest`."""
    saver = ckpt.Checkpointer(str(tmp_path))
    saver.save(3, {"w": torch.ones(2)}, {"step": 3, "epoch": 0, "batch": 3})

    def killed(path, text):
        raise KeyboardInterrupt  # the process dies right before `latest` is rewritten

    monkeypatch.setattr(ckpt, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        saver.save(3, {"w": torch.full((2,), 2.0)}, {"step": 3, "epoch": 1, "batch": 0})
    monkeypatch.undo()
    tensors, state = saver.load_latest()
    assert torch.equal(tensors["w"], torch.ones(2)) and state["epoch"] == 0
    saver.save(3, {"w": torch.full((2,), 3.0)}, {"step": 3, "epoch": 1, "batch": 0})  # resumed, saved again
    tensors, state = saver.load_latest()
    assert torch.equal(tensors["w"], torch.full((2,), 3.0)) and state["epoch"] == 1
    saver.save(6, {"w": torch.zeros(2)}, {"step": 6, "epoch": 1, "batch": 3})
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("step-")) == ["step-000000006"]
    assert torch.equal(saver.load_latest()[0]["w"], torch.zeros(2))
