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


PEFT_FAMILIES = ["ViT-B-16-SigLIP2", "EVA02-B-16", "PE-Core-T-16-384", "MobileCLIP2-S0", "ViTamin-S"]


@pytest.mark.slow
@pytest.mark.parametrize("name", PEFT_FAMILIES)
def test_peft_export_of_each_family_acts_as_glads_adapters(name, tmp_path, one_thread):
    """timm's fused qkv, SigLIP's latent pool (q + kv), EVA's separate q/k/v, the open_clip text
    tower: random nonzero adapters in both towers, exported and loaded by PEFT on the plain model."""
    import open_clip
    from test_families_end_to_end import FAMILIES, shrunk_folder

    from glad.models.loading import load_base_clip

    folder = shrunk_folder(tmp_path, name, FAMILIES[name][1])
    clip, _, _, tokenizer = load_base_clip(f"local-dir:{folder}", None, device="cpu")
    model = GladModel(clip, tokenizer, lora=LoraConfig(), use_alignnet=False, model_name=f"local-dir:{folder}",
                      pretrained=None).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    save_adapter(model, str(tmp_path / "adapter"), classnames=["a", "b"], template="a photo of a {}.")
    export(tmp_path / "adapter", tmp_path / "peft", "--format", "peft")
    size = model.preprocess.image_size
    images = torch.randn(2, 3, size, size, generator=g)
    tokens = tokenizer(["a photo of a red circle", "blue square"])
    base = open_clip.create_model(f"local-dir:{folder}").eval()
    before = features(base, images, tokens)
    base_weights = {k: v.clone() for k, v in base.state_dict().items()}
    tuned = peft.PeftModel.from_pretrained(base, str(tmp_path / "peft")).eval()
    want = features(model.clip, images, tokens)
    got = features(tuned.base_model.model, images, tokens)
    for w, x in zip(want, got, strict=True):  # relative: random towers' features are small
        scale = w.abs().max()
        torch.testing.assert_close(x / scale, w / scale, atol=1e-5, rtol=0)
    assert (want[1] - before[1]).norm() > 1e-2 * before[1].norm()  # the adapters act
    # merged, PEFT's weights are glad's merged weights, tensor for tensor (both towers)
    from glad.engine.export import merged_state_dict

    ours, theirs = merged_state_dict(model), tuned.merge_and_unload().state_dict()
    assert set(ours) == set(theirs)
    changed = [k for k in ours if not torch.equal(ours[k], base_weights[k])]
    assert any(k.startswith("visual.") for k in changed) and any(not k.startswith("visual.") for k in changed)
    for key in changed:
        torch.testing.assert_close(theirs[key], ours[key], atol=1e-6, rtol=1e-5)


def test_peft_folder_trained_further_and_unsupported_models_are_refused(tmp_path):
    """A packed PEFT adapter with entries outside glad's per-projection blocks has no exact glad
    form: refused on reading. transformers export refuses an architecture CLIPModel lacks; PEFT
    export refuses the ResNet attention pool. Each in one line, nothing written."""
    from safetensors.torch import load_file, save_file

    from glad.engine.use import load_tuned
    from glad.models.loading import load_base_clip
    from glad.models.peft_format import PeftExportError, layout

    clip, _, _, tok = load_base_clip("glad-tiny", None, device="cpu")
    model = GladModel(clip, tok, lora=LoraConfig(), use_alignnet=False, model_name="glad-tiny", pretrained=None)
    save_adapter(model, str(tmp_path / "adapter"), classnames=["a", "b"])
    export(tmp_path / "adapter", tmp_path / "peft", "--format", "peft")
    load_tuned(str(tmp_path / "peft"), device="cpu")  # reads back
    weights = tmp_path / "peft" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    key = next(k for k in tensors if k.endswith("attn.lora_B.weight"))
    tensors[key][0, -1] = 0.5  # q's rows, v's rank block: a packed-only update
    save_file(tensors, str(weights))
    with pytest.raises(ValueError, match="nonzero outside glad's per-projection blocks"):
        load_tuned(str(tmp_path / "peft"), device="cpu")

    rn, _, _, tok = load_base_clip("RN50", None, device="cpu")
    rn_model = GladModel(rn, tok, lora=LoraConfig(), use_alignnet=False, model_name="RN50", pretrained=None)
    with pytest.raises(PeftExportError, match="ResNet attention pool"):
        layout(rn_model.clip)


@pytest.mark.slow
def test_transformers_export_refuses_siglip_in_one_line(tmp_path, one_thread):
    from test_families_end_to_end import shrunk_folder

    from glad.models.loading import load_base_clip

    folder = shrunk_folder(tmp_path, "ViT-B-16-SigLIP2", True)
    clip, _, _, tok = load_base_clip(f"local-dir:{folder}", None, device="cpu")
    model = GladModel(clip, tok, lora=LoraConfig(), use_alignnet=False, model_name=f"local-dir:{folder}",
                      pretrained=None)
    save_adapter(model, str(tmp_path / "adapter"), classnames=["a", "b"])
    res = CliRunner().invoke(cli, ["export", "--adapter", str(tmp_path / "adapter"), "--output",
                                   str(tmp_path / "hf"), "--format", "transformers"])
    assert res.exit_code == 2 and "OpenAI-architecture" in res.output and "CustomTextCLIP" in res.output
    assert not (tmp_path / "hf" / "model.safetensors").exists()


def test_every_format_stores_the_asked_dtype(tmp_path):
    from safetensors.torch import load_file

    from glad.models.loading import load_base_clip

    clip, _, _, tok = load_base_clip("glad-tiny", None, device="cpu")
    model = GladModel(clip, tok, lora=LoraConfig(), use_alignnet=False, model_name="glad-tiny", pretrained=None)
    save_adapter(model, str(tmp_path / "adapter"), classnames=["a", "b"])
    for fmt, main in (("open_clip", "open_clip_model"), ("peft", "adapter_model")):
        out = tmp_path / fmt
        export(tmp_path / "adapter", out, "--format", fmt, "--dtype", "bf16")
        stored = {t.dtype for t in load_file(str(out / f"{main}.safetensors")).values() if t.is_floating_point()}
        assert stored == {torch.bfloat16}
    res = CliRunner().invoke(cli, ["export", "--adapter", str(tmp_path / "adapter"), "--output", str(tmp_path / "peft"),
                                   "--format", "open_clip"])
    assert res.exit_code == 2 and "holds a --format peft export" in res.output
