"""The whole path on one small random-weight model per open_clip family: glad train (method
glad), eval, predict, export, and the export loaded by open_clip alone with equal features.

Each model is the family's own config with a two-layer text tower (the image tower as
released), saved as an open_clip local-dir folder, as `glad export` or the Hub would hold it.
"""

from __future__ import annotations

import glob
import json
import os

import pytest
import torch
from click.testing import CliRunner
from data_fixtures import make_imagefolder
from glad_cli.main import cli

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

from test_models_formats import make_tokenizer_folder  # noqa: E402

FAMILIES = {  # name -> (lora encoders, needs a local tokenizer)
    "ViT-B-16-SigLIP2": (("image", "text"), True),
    "EVA02-B-16": (("image", "text"), False),
    "PE-Core-T-16-384": (("image", "text"), False),
    "RN50": (("image", "text"), False),
    "MobileCLIP2-S0": (("image", "text"), False),
    "ViTamin-S": (("image", "text"), False),
    "convnext_tiny": (("text",), False),
}
PEFT_REFUSED = {"RN50": "ResNet attention pool"}  # reads its Linears' weights: a PEFT LoRA would do nothing
CLASSES = ["red circle", "blue square", "green triangle"]


def shrunk_folder(root, name: str, tokenizer: bool) -> str:
    """`name`'s config with a small text tower, random weights, as an open_clip local-dir folder."""
    from safetensors.torch import save_file

    cfg = json.loads(json.dumps(open_clip.get_model_config(name)))
    cfg["text_cfg"].update(width=64, heads=4, layers=2)
    if tokenizer:  # the local tokenizer's few words
        cfg["text_cfg"]["vocab_size"] = 64
    folder = os.path.join(root, name)
    os.makedirs(folder)
    if tokenizer:
        make_tokenizer_folder(folder, words=" ".join(CLASSES + ["a photo of"]).split())
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None, pretrained_text=False, text_cfg=cfg["text_cfg"])
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": cfg, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}, f)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(folder, "open_clip_model.safetensors"))
    return folder


def _invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_trains_evaluates_predicts_and_exports(tmp_path, name, one_thread):
    encoders, tokenizer = FAMILIES[name]
    folder = shrunk_folder(tmp_path, name, tokenizer)
    data = make_imagefolder(tmp_path / "pets", per_class=3, splits=("train", "test"), classnames=CLASSES)
    model = f"local-dir:{folder}"
    out = tmp_path / "run"
    lora = [x for e in encoders for x in ("--lora-encoders", e)]
    _invoke("train", "--model", model, "--dataset", f"imagefolder:{data}", "--protocol", "few-shot", "--shots", 2,
            "--method", "glad", "--seed", 1, "--max-iters", 1, "--batch-size", 2, "--workers", 0, "--device", "cpu",
            "--eval-batch-size", 4, "--output", out, *lora)
    [adapter] = glob.glob(str(out / "glad" / "*" / "seed1" / "adapter"))
    config = json.loads(open(os.path.join(adapter, "adapter_config.json")).read())
    assert config["preprocess"]["mean"] == [0.5] * 3  # the model's own, recorded
    assert config["lora"]["encoders"] == list(encoders)

    res = json.loads(_invoke("eval", "--adapter", adapter, "--dataset", f"imagefolder:{data}", "--device", "cpu",
                             "--workers", 0, "--json"))
    assert res[0]["num_samples"] == 9
    pred = tmp_path / "pred.json"
    _invoke("predict", "--adapter", adapter, str(data / "test"), "--output", pred, "--device", "cpu")
    assert len(json.loads(pred.read_text())) == 9

    export = tmp_path / "export"
    _invoke("export", "--adapter", adapter, "--output", export)
    from glad.engine.use import load_tuned
    from glad.models import merge_lora

    tuned, _, _ = load_tuned(adapter, device="cpu")
    merge_lora(tuned.clip)
    plain, _, pre_val = open_clip.create_model_and_transforms(f"local-dir:{export}")
    plain.eval()
    tokens = open_clip.get_tokenizer(f"local-dir:{export}")([f"a photo of a {c}" for c in CLASSES])
    from PIL import Image

    images = torch.stack([pre_val(Image.open(p).convert("RGB")) for p in sorted(glob.glob(str(data / "test/*/*")))])
    assert torch.equal(images, torch.stack([tuned.preprocess.test_transform()(Image.open(p).convert("RGB"))
                                            for p in sorted(glob.glob(str(data / "test/*/*")))]))
    with torch.no_grad():
        torch.testing.assert_close(plain.encode_image(images), tuned.clip.encode_image(images), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(plain.encode_text(tokens), tuned.clip.encode_text(tokens), rtol=1e-5, atol=1e-5)
    # the tuned LoRA is in the export: it differs from the base model
    base, _, _ = open_clip.create_model_and_transforms(model)
    with torch.no_grad():
        assert not torch.allclose(base.eval().encode_text(tokens), plain.encode_text(tokens))

    # the same adapter for PEFT, on the plain model (or one line saying why it cannot be)
    res = CliRunner().invoke(cli, ["export", "--adapter", adapter, "--output", str(tmp_path / "peft"),
                                   "--format", "peft"])
    if name in PEFT_REFUSED:
        assert res.exit_code == 2 and PEFT_REFUSED[name] in res.output, res.output
        return
    assert res.exit_code == 0, res.output
    peft = pytest.importorskip("peft")
    adapted = peft.PeftModel.from_pretrained(base.eval(), str(tmp_path / "peft")).eval()
    with torch.no_grad():
        torch.testing.assert_close(adapted.base_model.model.encode_image(images), tuned.clip.encode_image(images),
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(adapted.base_model.model.encode_text(tokens), tuned.clip.encode_text(tokens),
                                   rtol=1e-5, atol=1e-5)


def test_a_tower_without_attention_is_refused_before_any_work(tmp_path):
    folder = shrunk_folder(tmp_path, "convnext_tiny", tokenizer=False)
    data = make_imagefolder(tmp_path / "pets", per_class=2, splits=("train", "test"), classnames=CLASSES)
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "--model", f"local-dir:{folder}", "--dataset", f"imagefolder:{data}",
                                   "--device", "cpu", "--output", str(out)])
    assert res.exit_code == 2, res.output
    [line] = [x for x in res.output.splitlines() if x.startswith("glad: error:")]
    assert "--lora-encoders text" in line
    assert not (out / "glad").exists()  # nothing trained or written for a job
