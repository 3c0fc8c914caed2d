"""glad export --format peft / transformers: what PEFT and transformers load gives glad's
features, and glad reads its PEFT export back."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from glad_cli.main import cli

from glad.models import GladModel, LoraConfig, load_clip, save_adapter

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


def export(adapter, output, *flags):
    res = CliRunner().invoke(cli, ["export", "--adapter", str(adapter), "--output", str(output), *flags])
    assert res.exit_code == 0, res.output
    return res.output


def tuned_vitb16(weights, lora: LoraConfig, alignnet: bool, seed: int = 0) -> GladModel:
    """ViT-B-16 on random OpenAI-layout weights with nonzero adapters (as after training)."""
    clip, _, _, tokenizer = load_clip("ViT-B-16", str(weights), device="cpu")
    model = GladModel(clip, tokenizer, lora=lora, use_alignnet=alignnet, model_name="ViT-B-16",
                      pretrained=str(weights))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


@torch.no_grad()
def features(clip, images, tokens):
    return clip.encode_image(images), clip.encode_text(tokens)


@pytest.fixture(scope="module")
def vitb16(user_home, tmp_path_factory):
    """A ViT-B-16 GLAD adapter (LoRA + AlignNet) and glad's features of it."""
    import open_clip

    model = tuned_vitb16(user_home.hf_weights, LoraConfig(), alignnet=True)
    folder = tmp_path_factory.mktemp("vitb16") / "adapter"
    save_adapter(model, str(folder), classnames=["cat", "dog", "car"], template="a photo of a {}.")
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    tokens = open_clip.get_tokenizer("ViT-B-16")(["a photo of a cat.", "a diagram of an engine."])
    return folder, images, tokens, features(model.clip, images, tokens)


def test_peft_export_loads_with_peft_on_plain_open_clip(vitb16, user_home, tmp_path):
    import open_clip

    adapter, images, tokens, (want_img, want_txt) = vitb16
    out = tmp_path / "peft"
    printed = export(adapter, out, "--format", "peft")
    assert "AlignNet is not in the export" in printed and "PeftModel.from_pretrained" in printed
    config = peft.PeftConfig.from_pretrained(str(out))
    assert config.r == 24 and config.lora_alpha == 24  # q, k, v of rank 8 packed; scaling 24/24 = 8/8
    base = open_clip.create_model("ViT-B-16-quickgelu", pretrained=str(user_home.hf_weights)).eval()
    plain = features(base, images, tokens)
    tuned = peft.PeftModel.from_pretrained(base, str(out)).eval()
    assert sum("lora_A" in n for n, _ in tuned.named_parameters()) == 2 * 24  # in_proj and out_proj per MHA
    got_img, got_txt = features(tuned.base_model.model, images, tokens)
    torch.testing.assert_close(got_img, want_img, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_txt, want_txt, atol=1e-5, rtol=0)
    assert (got_img - plain[0]).abs().max() > 1e-2  # the adapter acts
    merged = tuned.merge_and_unload()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    got_img, got_txt = features(merged, images, tokens)
    torch.testing.assert_close(got_img, want_img, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_txt, want_txt, atol=1e-5, rtol=0)
    sidecar = json.loads((out / "glad_adapter.json").read_text())
    assert sidecar["classnames"] == ["cat", "dog", "car"] and sidecar["template"] == "a photo of a {}."


def test_transformers_export_gives_glads_features(vitb16, tmp_path):
    adapter, images, tokens, (want_img, want_txt) = vitb16
    out = tmp_path / "hf"
    printed = export(adapter, out, "--format", "transformers")
    assert "zero-shot-image-classification" in printed
    hf = transformers.CLIPModel.from_pretrained(str(out)).eval()
    with torch.no_grad():
        got_img = hf.get_image_features(pixel_values=images)
        got_txt = hf.get_text_features(input_ids=tokens)
    got_img, got_txt = (getattr(x, "pooler_output", x) for x in (got_img, got_txt))
    torch.testing.assert_close(got_img, want_img, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_txt, want_txt, atol=1e-5, rtol=0)
    assert hf.config.id2label == {0: "cat", 1: "dog", 2: "car"}
    processor = transformers.CLIPProcessor.from_pretrained(str(out))
    assert processor.tokenizer("a photo of a cat.")["input_ids"] == tokens[0][tokens[0].nonzero()].flatten().tolist()


def test_transformers_pipeline_top_class_equals_glad_predict(user_home, tmp_path):
    """No AlignNet (which no export carries): the pipeline and glad predict classify alike."""
    from PIL import Image

    from glad.engine.use import Classifier

    model = tuned_vitb16(user_home.hf_weights, LoraConfig(), alignnet=False, seed=3)
    classes = ["red square", "green circle", "blue triangle", "yellow star"]
    adapter = tmp_path / "adapter"
    save_adapter(model, str(adapter), classnames=classes, template="a drawing of a {}.")
    export(adapter, tmp_path / "hf", "--format", "transformers")
    rng = torch.Generator().manual_seed(0)
    paths = []
    for i in range(3):
        pixels = (torch.rand(96, 128, 3, generator=rng) * 255).to(torch.uint8).numpy()
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    classify = transformers.pipeline("zero-shot-image-classification", model=str(tmp_path / "hf"), device="cpu")
    ours = Classifier(str(adapter), device="cpu").predict([str(p) for p in paths], top_k=4)
    for path, mine in zip(paths, ours, strict=True):
        theirs = classify(Image.open(path), candidate_labels=classes, hypothesis_template="a drawing of a {}.")
        assert theirs[0]["label"] == mine.top[0][0]
        probs = {d["label"]: d["score"] for d in theirs}
        for label, p in mine.top:
            assert abs(probs[label] - p) < 2e-2  # preprocessing by another library: near, not bit-equal


def test_peft_rank_and_round_trip_through_glad(tmp_path):
    """glad-tiny trained one step with --lora-r 16: PEFT reads rank 48 (16 per q/k/v); glad eval and
    predict read the PEFT folder back with the original adapter's results."""
    from data_fixtures import make_coop_dataset

    from glad.engine.use import Classifier
    from glad.models.loading import load_base_clip

    root = tmp_path / "data"
    make_coop_dataset(root, "dtd", n_classes=4, per_class=(4, 2, 3))
    res = CliRunner().invoke(cli, ["train", "--model", "glad-tiny", "--pretrained", "none", "--data-root", str(root),
                                   "--dataset", "dtd", "--method", "lora", "--seed", "1", "--shots", "2",
                                   "--lora-r", "16", "--max-iters", "1", "--lr", "0.05", "--workers", "0",
                                   "--device", "cpu", "--output", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    adapter = tmp_path / "run" / "lora" / "dtd-base" / "seed1" / "adapter"
    out = tmp_path / "peft"
    export(adapter, out, "--format", "peft")
    config = peft.PeftConfig.from_pretrained(str(out))
    lora = json.loads((adapter / "adapter_config.json").read_text())["lora"]
    assert lora["r"] == 16 and config.r == 48  # 16 per projection, q/k/v packed: never read as 8
    assert config.lora_alpha / config.r == pytest.approx(lora["alpha"] / lora["r"])  # the same scaling
    original = Classifier(str(adapter), device="cpu")
    assert max(p.abs().max() for n, p in original.model.clip.named_parameters() if "lora_B" in n) > 0
    base = load_base_clip("glad-tiny", None, device="cpu")[0].eval()
    tuned = peft.PeftModel.from_pretrained(base, str(out)).eval()
    reloaded = Classifier(str(out), device="cpu")
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = original.probabilities(images)
        torch.testing.assert_close(reloaded.probabilities(images), want, atol=1e-6, rtol=0)
        torch.testing.assert_close(tuned.base_model.model.encode_image(images),
                                   original.model.clip.encode_image(images), atol=1e-5, rtol=0)
    res = CliRunner().invoke(cli, ["eval", "--adapter", str(out), "--dataset", "dtd", "--split", "base",
                                   "--data-root", str(root), "--workers", "0", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    direct = CliRunner().invoke(cli, ["eval", "--adapter", str(adapter), "--dataset", "dtd", "--split", "base",
                                      "--data-root", str(root), "--workers", "0", "--device", "cpu"])
    assert direct.exit_code == 0 and "% of " in res.output
    score = [line for line in res.output.splitlines() if "% of " in line]
    assert score == [line for line in direct.output.splitlines() if "% of " in line]
