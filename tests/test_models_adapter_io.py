"""Adapter folders: exact round trip, PEFT-style layout, clear mismatch errors, atomic writes."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from glad.models import (
    AdapterMismatchError,
    LoraConfig,
    inject_lora,
    is_merged,
    load_adapter,
    read_adapter_config,
    save_adapter,
)
from glad.models.testing import build_tiny_clip, build_tiny_glad

pytestmark = pytest.mark.usefixtures("one_thread")


DEFAULT_LORA = LoraConfig()


def _glad(lora=DEFAULT_LORA, alignnet=True, name="tiny", pretrained="tag-a", hidden=(256, 128)):
    """This module's model: named, with weights "tag-a" (what adapters record and check)."""
    return build_tiny_glad(lora, alignnet, model_name=name, pretrained=pretrained, alignnet_hidden=hidden)


def _perturb(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def _inputs(model):
    g = torch.Generator().manual_seed(9)
    return torch.randn(2, 3, 32, 32, generator=g), model.tokenize(["a cat", "a dog", "a bird"])


def test_round_trip_is_exact(tmp_path):
    src = _glad()
    _perturb(src)
    folder = save_adapter(src, str(tmp_path / "adapter"))
    dst = _glad()
    load_adapter(dst, folder)
    for (n1, p1), (n2, p2) in zip(src.named_trainable_parameters(), dst.named_trainable_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2), n1
    images, tokens = _inputs(src)
    with torch.no_grad():
        assert torch.equal(src(images, tokens), dst(images, tokens))


def test_folder_layout(tmp_path):
    model = _glad(lora=LoraConfig(r=4, targets=("q", "v"), rslora=True))
    save_adapter(model, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny" and config["pretrained"] == "tag-a"
    assert config["lora"] == LoraConfig(r=4, targets=("q", "v"), rslora=True).to_dict()
    assert config["alignnet"] == {"embed_dim": 32, "hidden": [256, 128]}
    assert "peft_type" not in config and config["glad_version"]  # glad's own config, no PEFT field
    assert read_adapter_config(str(tmp_path)) == config
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    lora_keys = [k for k in tensors if not k.startswith("alignnet.")]
    assert "base_model.model.visual.transformer.resblocks.0.attn.q_proj.lora_A.weight" in lora_keys
    assert "base_model.model.transformer.resblocks.1.attn.v_proj.lora_B.weight" in lora_keys
    assert all(k.startswith("base_model.model.") and k.endswith((".lora_A.weight", ".lora_B.weight"))
               for k in lora_keys)
    assert len(lora_keys) == 2 * 2 * 2 * 2  # 2 towers x 2 blocks x (q, v) x (A, B)
    assert sorted(k for k in tensors if k.startswith("alignnet.")) == sorted(
        f"alignnet.layers.{i}.{w}" for i in range(3) for w in ("weight", "bias"))
    assert tensors["base_model.model.visual.transformer.resblocks.0.attn.q_proj.lora_A.weight"].shape == (4, 64)


def test_bare_clip_with_lora(tmp_path):
    clip, _ = build_tiny_clip()
    inject_lora(clip, LoraConfig())
    with torch.no_grad():
        for p in clip.parameters():
            if p.requires_grad:
                p.normal_()
    save_adapter(clip, str(tmp_path))
    other, _ = build_tiny_clip()
    inject_lora(other, LoraConfig())
    load_adapter(other, str(tmp_path))
    for (n, a), (_, b) in zip(clip.named_parameters(), other.named_parameters(), strict=True):
        assert torch.equal(a, b), n


def test_load_into_merged_model(tmp_path):
    src = _glad()
    _perturb(src, seed=1)
    images, tokens = _inputs(src)
    save_adapter(src, str(tmp_path))
    dst = _glad()
    _perturb(dst, seed=2)
    dst.merge()
    load_adapter(dst, str(tmp_path))
    assert is_merged(dst.clip)
    with torch.no_grad():
        torch.testing.assert_close(dst(images, tokens), src(images, tokens), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("change, match", [
    (dict(lora=LoraConfig(r=4)), "LoRA"),
    (dict(lora=LoraConfig(targets=("q", "k", "v", "out"))), "LoRA"),
    (dict(alignnet=False), "AlignNet"),
    (dict(hidden=(64,)), "AlignNet"),
    (dict(name="other"), "trained on model 'tiny'"),
    (dict(pretrained="tag-b"), "tag-a"),
])
def test_mismatch_is_refused_clearly(tmp_path, change, match):
    save_adapter(_glad(), str(tmp_path))
    with pytest.raises(AdapterMismatchError, match=match):
        load_adapter(_glad(**change), str(tmp_path))


def test_check_base_override_and_dropout_ignored(tmp_path):
    save_adapter(_glad(lora=LoraConfig(dropout=0.1)), str(tmp_path))
    load_adapter(_glad(lora=LoraConfig(dropout=0.0), name="renamed"), str(tmp_path), check_base=False)


def test_local_weight_files_compare_by_name(tmp_path):
    save_adapter(_glad(pretrained=os.path.join("a", "ViT-B-16.pt")), str(tmp_path))
    load_adapter(_glad(pretrained=os.path.join("b", "c", "ViT-B-16.pt")), str(tmp_path))
    with pytest.raises(AdapterMismatchError):
        load_adapter(_glad(pretrained=os.path.join("a", "other.pt")), str(tmp_path))


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(_glad(), str(tmp_path / "missing"))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(AdapterMismatchError, match="not a glad adapter"):
        load_adapter(_glad(), str(tmp_path))
    save_adapter(_glad(), str(tmp_path))
    os.remove(tmp_path / "adapter_model.safetensors")
    with pytest.raises(FileNotFoundError, match="incomplete"):
        load_adapter(_glad(), str(tmp_path))
    with pytest.raises(ValueError, match="nothing to save"):
        save_adapter(_glad(lora=None, alignnet=False).clip, str(tmp_path / "x"))


def test_tensor_mismatch_names_keys(tmp_path):
    model = _glad()
    save_adapter(model, str(tmp_path))
    path = tmp_path / "adapter_model.safetensors"
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.startswith("base_model."))
    from safetensors.torch import save_file

    save_file({k: v for k, v in tensors.items() if k != key}, str(path))
    with pytest.raises(AdapterMismatchError, match="missing"):
        load_adapter(_glad(), str(tmp_path))
    tensors[key] = torch.zeros(3, 3)
    save_file(tensors, str(path))
    with pytest.raises(AdapterMismatchError, match="shape"):
        load_adapter(_glad(), str(tmp_path))


def test_writes_are_atomic(tmp_path, monkeypatch):
    first = _glad()
    _perturb(first, seed=3)
    save_adapter(first, str(tmp_path))
    before = (tmp_path / "adapter_model.safetensors").read_bytes()
    # a crash while writing the weights leaves the previous file whole and no temporary behind
    import safetensors.torch

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(_glad(), str(tmp_path))
    assert (tmp_path / "adapter_model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["adapter_config.json", "adapter_model.safetensors"]
    monkeypatch.undo()
    save_adapter(_glad(), str(tmp_path))  # overwriting works
    assert (tmp_path / "adapter_model.safetensors").read_bytes() != before


def test_peft_refuses_glads_folder_and_glad_refuses_peft_and_reads_old_adapters(tmp_path):
    peft = pytest.importorskip("peft")
    model = _glad(lora=LoraConfig(r=16))
    save_adapter(model, str(tmp_path / "glad"))
    with pytest.raises(TypeError, match="peft_type"):  # never read as rank 8
        peft.PeftConfig.from_pretrained(str(tmp_path / "glad"))
    peft.LoraConfig(r=16, target_modules=["q_proj"]).save_pretrained(str(tmp_path / "peft"))
    with pytest.raises(AdapterMismatchError, match="is a PEFT adapter"):
        read_adapter_config(str(tmp_path / "peft"))
    old = json.loads((tmp_path / "glad" / "adapter_config.json").read_text())
    (tmp_path / "glad" / "adapter_config.json").write_text(json.dumps({**old, "peft_type": "LORA"}))
    assert read_adapter_config(str(tmp_path / "glad"))["lora"]["r"] == 16  # written by an earlier glad
