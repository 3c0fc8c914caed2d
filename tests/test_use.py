"""Using a tuned model: glad predict (library and CLI), glad export through open_clip alone,
adapters by Hub id from a local cache, offline."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest
import torch
from click.testing import CliRunner
from data_fixtures import corrupt_image, make_coop_dataset, make_imagefolder
from engine_fixtures import base_flags, register_tiny_model
from glad_cli.main import cli

from glad.engine.use import Classifier, expand_images, resolve_adapter
from glad.models import WeightsUnavailableError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model's adapter, trained on dtd's base classes by glad train."""
    tmp = tmp_path_factory.mktemp("use")
    register_tiny_model(tmp / "models")
    root = tmp / "data"
    make_coop_dataset(root, "dtd", n_classes=4, per_class=(4, 2, 3))
    out = tmp / "run"
    res = CliRunner().invoke(cli, ["train", *base_flags(root, out, **{"--epochs": 2}), "--dataset", "dtd",
                                   "--method", "glad", "--seed", "1"])
    assert res.exit_code == 0, res.output
    return out / "glad" / "dtd-base" / "seed1" / "adapter", root


def test_adapter_records_its_classes_and_template(trained):
    adapter, _ = trained
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["classnames"] == ["banded", "blotchy"] and config["template"] == "{} texture."
    assert config["template_override"] is None


def test_predict_a_folder_with_a_corrupt_file(trained, tmp_path):
    adapter, _ = trained
    folder = make_imagefolder(tmp_path / "new", n_classes=2, per_class=3)
    bad = corrupt_image(next(folder.rglob("*.png")))
    out = tmp_path / "pred.csv"
    res = CliRunner().invoke(cli, ["predict", "--adapter", str(adapter), str(folder), "--top-k", "2",
                                   "--output", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith(str(folder))]
    assert len(lines) == 6 and sum("error:" in line for line in lines) == 1 and bad.name in res.output
    rows = list(csv.DictReader(out.open()))
    good = [r for r in rows if not r["error"]]
    assert len(good) == 5 * 2 and {r["class"] for r in good} <= {"banded", "blotchy"}
    for path in {r["path"] for r in good}:
        probs = [float(r["probability"]) for r in good if r["path"] == path]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)


def test_classifier_matches_the_evaluation_model(trained):
    # the library call: merged LoRA + AlignNet give the probabilities of the unmerged model
    from glad.data import load_image, test_transform
    from glad.engine.use import load_tuned

    adapter, root = trained
    clf = Classifier(str(adapter), device="cpu")
    paths = expand_images([str(root / "dtd" / "images")])
    got = clf.predict(paths, top_k=2)
    model, _, _ = load_tuned(str(adapter), device="cpu")
    model.eval()
    tokens = model.tokenize([f"{c} texture." for c in clf.classes])
    images = torch.stack([test_transform(32)(load_image(p)) for p in paths])
    with torch.no_grad():
        want = model(images, tokens).softmax(-1)
    for pred, row in zip(got, want, strict=True):
        top = row.topk(2)
        assert [c for c, _ in pred.top] == [clf.classes[i] for i in top.indices.tolist()]
        assert [v for _, v in pred.top] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_classes_file_and_missing_classes(trained, tmp_path):
    adapter, root = trained
    names = tmp_path / "classes.txt"
    names.write_text("cat\ndog\nbird\n")
    clf = Classifier(str(adapter), [line for line in names.read_text().splitlines()], template="a photo of a {}.",
                     device="cpu")
    assert clf.classes == ["cat", "dog", "bird"]
    bare = tmp_path / "bare"
    shutil.copytree(adapter, bare)
    config = json.loads((bare / "adapter_config.json").read_text())
    config["classnames"] = None
    (bare / "adapter_config.json").write_text(json.dumps(config))
    res = CliRunner().invoke(cli, ["predict", "--adapter", str(bare), str(root), "--device", "cpu"])
    assert res.exit_code == 2 and "--classes" in res.output


def test_hub_adapter_from_a_local_cache_offline(trained, tmp_path):
    adapter, root = trained
    hub = tmp_path / "hub"
    snapshot = hub / "models--someone--dtd-glad" / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(adapter, snapshot)
    (hub / "models--someone--dtd-glad" / "refs").mkdir()
    (hub / "models--someone--dtd-glad" / "refs" / "main").write_text(snapshot.name)
    assert os.path.samefile(resolve_adapter("hf-hub:someone/dtd-glad", cache_dir=str(hub), offline=True), snapshot)
    res = CliRunner().invoke(cli, ["eval", "--adapter", "hf-hub:someone/dtd-glad", "--cache-dir", str(hub),
                                   "--offline", "--dataset", "dtd", "--split", "base", "--data-root", str(root),
                                   "--workers", "0", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["num_samples"] == 6
    with pytest.raises(WeightsUnavailableError, match="offline mode: on"):
        resolve_adapter("hf-hub:someone/not-cached", cache_dir=str(hub), offline=True)
    res = CliRunner().invoke(cli, ["predict", "--adapter", "hf-hub:someone/not-cached", "--cache-dir", str(hub),
                                   "--offline", str(root)])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "hf-hub:someone/not-cached" in res.output


@pytest.mark.slow
def test_export_round_trip_through_open_clip_alone(user_home, tmp_path):
    """A ViT-B-16 adapter (random OpenAI-layout weights) merged and exported; open_clip alone loads
    it (QuickGELU included) and gives glad's merged model's image and text features."""
    import open_clip
    from user_fixtures import run_shell

    from glad.models import GladModel, LoraConfig, load_clip, merge_lora, save_adapter

    clip, _, _, tokenizer = load_clip("ViT-B-16", str(user_home.hf_weights), device="cpu")
    model = GladModel(clip, tokenizer, lora=LoraConfig(), use_alignnet=True, model_name="ViT-B-16",
                      pretrained="openai")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    adapter = user_home.home / "adapters" / "vitb16"
    save_adapter(model, str(adapter), classnames=["a", "b"], template="a photo of a {}.")
    for target in ("exported.safetensors", "exported"):
        res = run_shell(f"glad export --adapter adapters/vitb16 --output {target} --offline", user_home.home)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "AlignNet is not in the export" in res.stdout
    merged = model
    merge_lora(merged.clip)
    images = torch.randn(2, 3, 224, 224, generator=g)
    tokens = open_clip.get_tokenizer("ViT-B-16")(["a photo of a cat.", "a diagram."])
    with torch.no_grad():
        want_img, want_txt = merged.clip.encode_image(images), merged.clip.encode_text(tokens)
    for name, kwargs in (("ViT-B-16-quickgelu", {"pretrained": str(user_home.home / "exported.safetensors")}),
                         (f"local-dir:{user_home.home / 'exported'}", {})):
        plain = open_clip.create_model_and_transforms(name, **kwargs)[0].eval()
        assert sum(type(m).__name__ == "QuickGELU" for m in plain.modules()) == 24
        with torch.no_grad():
            torch.testing.assert_close(plain.encode_image(images), want_img, atol=1e-5, rtol=0)
            torch.testing.assert_close(plain.encode_text(tokens), want_txt, atol=1e-5, rtol=0)


def test_predict_and_export_refuse_bad_settings_before_loading(trained, tmp_path):
    adapter, _ = trained
    res = CliRunner().invoke(cli, ["predict", "--adapter", str(adapter), str(tmp_path), "--template", "no slot"])
    assert res.exit_code == 2 and "exactly one {}" in res.output
    res = CliRunner().invoke(cli, ["predict", "--adapter", str(adapter), str(tmp_path), "--output", "pred.xlsx"])
    assert res.exit_code == 2 and ".csv or .json" in res.output
    mine = tmp_path / "mine.csv"
    mine.write_text("my notes")
    res = CliRunner().invoke(cli, ["predict", "--adapter", str(adapter), str(tmp_path), "--output", str(mine)])
    assert res.exit_code == 2 and "--force" in res.output and mine.read_text() == "my notes"
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "open_clip_model.safetensors").write_bytes(b"earlier")
    res = CliRunner().invoke(cli, ["export", "--adapter", str(adapter), "--output", str(tmp_path / "exp")])
    assert res.exit_code == 2 and "--force" in res.output
    assert (tmp_path / "exp" / "open_clip_model.safetensors").read_bytes() == b"earlier"


def test_a_broken_adapter_config_is_named(tmp_path):
    from glad.models import AdapterMismatchError, read_adapter_config

    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterMismatchError, match="adapter_config.json is not valid JSON"):
        read_adapter_config(str(tmp_path))


def test_an_adapter_on_another_base_model_names_the_base_model(trained, tmp_path):
    adapter, root = trained
    res = CliRunner().invoke(cli, ["eval", "--adapter", str(adapter), "--dataset", "dtd", "--data-root", str(root),
                                   "--model", "glad-tiny", "--pretrained", "none", "--device", "cpu"])
    assert res.exit_code == 2, res.output
    [line] = [x for x in res.output.splitlines() if "error" in x]
    assert "was trained on 'glad-test-tiny'" in line and "pass --model glad-test-tiny" in line


def test_glad_tiny_exports_to_a_folder_not_a_bare_file(tmp_path):
    root = tmp_path / "data"
    make_coop_dataset(root, "dtd", n_classes=4, per_class=(4, 2, 3))
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "--model", "glad-tiny", "--pretrained", "none", "--data-root", str(root),
                                   "--dataset", "dtd", "--method", "lora", "--seed", "1", "--shots", "2",
                                   "--max-iters", "1", "--workers", "0", "--device", "cpu", "--output", str(out)])
    assert res.exit_code == 0, res.output
    adapter = out / "lora" / "dtd-base" / "seed1" / "adapter"
    res = CliRunner().invoke(cli, ["export", "--adapter", str(adapter), "--output", str(tmp_path / "x.safetensors")])
    assert res.exit_code == 2 and "export to a folder" in res.output
    assert not (tmp_path / "x.safetensors").exists()


def test_export_in_half_precision(trained, tmp_path):
    import open_clip
    from safetensors.torch import load_file

    adapter, _ = trained
    sizes, feats = {}, {}
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for dtype in ("fp32", "fp16", "bf16"):
        out = tmp_path / dtype
        res = CliRunner().invoke(cli, ["export", "--adapter", str(adapter), "--output", str(out), "--dtype", dtype])
        assert res.exit_code == 0, res.output
        weights = out / "open_clip_model.safetensors"
        stored = {v.dtype for v in load_file(str(weights)).values() if v.is_floating_point()}
        assert stored == {{"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]}
        sizes[dtype] = weights.stat().st_size
        model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{out}")
        with torch.no_grad():
            feats[dtype] = model.eval().encode_image(image)
    assert sizes["fp16"] < 0.55 * sizes["fp32"] and sizes["bf16"] < 0.55 * sizes["fp32"]
    torch.testing.assert_close(feats["fp16"], feats["fp32"], rtol=0, atol=5e-3)
    torch.testing.assert_close(feats["bf16"], feats["fp32"], rtol=0, atol=3e-2)
