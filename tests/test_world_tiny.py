"""glad-tiny: registration with open_clip, short-budget pretraining, the cache and its invalidation."""

import json
import os

import pytest
import torch

from glad.io import _umask
from glad.world import tiny
from glad.world.pretrain import BUDGETS, PretrainConfig, pretrain


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_open_clip_knows_glad_tiny(cache):
    import open_clip

    tiny.register_model_config()
    assert open_clip.get_model_config("glad-tiny") == tiny.MODEL_CONFIG
    model, tokenizer = tiny.create_model()
    tokens = tokenizer(["a photo of three red circles."])
    assert tokens.shape == (1, tiny.MODEL_CONFIG["text_cfg"]["context_length"])
    with torch.no_grad():
        f = model.encode_image(torch.zeros(2, 3, 32, 32), normalize=True)
    assert f.shape == (2, tiny.MODEL_CONFIG["embed_dim"])


def test_random_init_is_fixed_and_leaves_caller_rng_alone(cache):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, _ = tiny.create_model()
    got = torch.rand(3)
    b, _ = tiny.create_model()
    assert torch.equal(got, expected)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_pretraining_lowers_the_loss(cache):
    model, tokenizer = tiny.create_model()
    cfg = PretrainConfig(steps=40, batch_size=32, pool=256, warmup=4, lr=3e-3, threads=1)
    history = pretrain(model, tokenizer, cfg, progress=False)
    loss = history["loss"]
    assert len(loss) == 40 and all(torch.isfinite(torch.tensor(loss)))
    first, last = sum(loss[:5]) / 5, sum(loss[-5:]) / 5
    assert last < first - 0.2, (first, last)
    assert not model.training and not model.token_embedding.sparse


def test_short_budget_builds_caches_and_loads(cache):
    path = tiny.ensure_pretrained("test", progress=False)
    assert path == cache / "models" / "glad-tiny-test.safetensors" and path.is_file()
    meta = tiny.read_metadata(path)
    assert meta["generator"] and meta["pretrain_config"]["steps"] == BUDGETS["test"].steps
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert len(sidecar["loss"]) == BUDGETS["test"].steps

    model, pre_train, pre_val, tokenizer = tiny.load_glad_tiny(budget="test", device="cpu", progress=False)
    from safetensors.torch import load_file

    saved = load_file(str(path))
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    # a second load reuses the file rather than pretraining again
    mtime = path.stat().st_mtime_ns
    tiny.load_glad_tiny(budget="test", device="cpu", progress=False)
    assert path.stat().st_mtime_ns == mtime

    # the transforms fit the tiny image size; a loaded file path gives the same weights
    from PIL import Image

    img = Image.new("RGB", (50, 40), (200, 30, 30))
    assert pre_train(img).shape == pre_val(img).shape == (3, 32, 32)
    again, *_ = tiny.load_glad_tiny(pretrained=str(path), device="cpu")
    for k, v in again.state_dict().items():
        assert torch.equal(v, saved[k]), k
    random, *_ = tiny.load_glad_tiny(pretrained=None, device="cpu")
    assert not torch.equal(random.state_dict()["logit_scale"] * 0 + random.visual.conv1.weight,
                           saved["visual.conv1.weight"])
    with torch.no_grad():
        f = model.encode_text(tokenizer(["a photo of a red circle."]), normalize=True)
    assert torch.allclose(f.norm(dim=-1), torch.ones(1))


def test_stale_cache_is_rebuilt(cache, monkeypatch):
    path = tiny.ensure_pretrained("test", progress=False)
    cfg = BUDGETS["test"]
    assert tiny.is_fresh(path, cfg)
    first = tiny.read_metadata(path)

    # the world's generator changed: the cached weights no longer describe it
    with monkeypatch.context() as m:
        m.setattr(tiny, "generator_hash", lambda: "0123456789abcdef")
        assert not tiny.is_fresh(path, cfg)
        tiny.ensure_pretrained("test", progress=False)
        assert tiny.read_metadata(path)["generator"] == "0123456789abcdef"
        assert tiny.is_fresh(path, cfg)
    assert not tiny.is_fresh(path, cfg)  # and back: stale for the real generator

    # a different pretraining config is another cache entry and also stale for the old one
    other = PretrainConfig(steps=2, batch_size=16, pool=32, warmup=1)
    assert not tiny.is_fresh(path, other)
    other_path = tiny.ensure_pretrained(other, progress=False)
    assert other_path != path and tiny.read_metadata(other_path)["pretrain_config"]["steps"] == 2

    # threads only change speed, not the model: not part of the key
    import dataclasses

    assert tiny.is_fresh(other_path, dataclasses.replace(other, threads=1))

    # a truncated file is stale, never a crash
    path.write_bytes(path.read_bytes()[:100])
    assert tiny.read_metadata(path) is None and not tiny.is_fresh(path, cfg)
    assert tiny.ensure_pretrained("test", progress=False) == path
    assert tiny.read_metadata(path)["generator"] == first["generator"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]


def test_errors_name_the_fix(cache):
    with pytest.raises(FileNotFoundError, match="glad-world"):
        tiny.load_glad_tiny(pretrained="/nonexistent/weights.safetensors", device="cpu")
    with pytest.raises(ValueError, match="budget 'huge'"):
        tiny.ensure_pretrained("huge")


def test_short_budget_end_to_end_zero_shot(cache, monkeypatch):
    """glad-tiny (test budget, from GLAD_TINY_BUDGET) classifies a built-in dataset end to end."""
    from PIL import Image

    from glad.data import build_dataset, subsample_classes

    monkeypatch.setenv("GLAD_TINY_BUDGET", "test")
    model, _, preprocess, tokenizer = tiny.load_glad_tiny(device="cpu", progress=False)
    assert tiny.checkpoint_path().name == "glad-tiny-test.safetensors" and tiny.checkpoint_path().is_file()
    ds = subsample_classes(build_dataset("world_counts"), "novel")
    items = ds.test[:40]
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(d.impath).convert("RGB")) for d in items])
        logits = model.encode_image(x, normalize=True) @ model.encode_text(tokenizer(ds.prompts()), normalize=True).T
    assert logits.shape == (40, ds.num_classes) and torch.isfinite(logits).all()
    assert {d.label for d in items} == set(range(ds.num_classes))
