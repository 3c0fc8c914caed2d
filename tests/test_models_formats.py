"""Weights and tokenizers in the formats users hold: transformers CLIPModel folders and files,
open_clip local-dir folders, and a local Hugging Face tokenizer for configs that download one."""

from __future__ import annotations

import json

import pytest
import torch

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

from engine_fixtures import TINY_MODEL  # noqa: E402

from glad.models import load_clip  # noqa: E402
from glad.models.testing import tiny_clip_config  # noqa: E402


def hf_clip_like_tiny(seed: int = 0):
    """A random transformers CLIPModel with the shapes of the registered tiny open_clip model."""
    cfg = tiny_clip_config()
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=t["width"], intermediate_size=int(t["width"] * t["mlp_ratio"]),
                         num_attention_heads=t["heads"], num_hidden_layers=t["layers"],
                         max_position_embeddings=t["context_length"], vocab_size=t["vocab_size"],
                         eos_token_id=49407),
        vision_config=dict(hidden_size=v["width"], intermediate_size=int(v["width"] * v["mlp_ratio"]),
                           num_attention_heads=v["width"] // v["head_width"], num_hidden_layers=v["layers"],
                           image_size=v["image_size"], patch_size=v["patch_size"]),
        projection_dim=cfg["embed_dim"])
    torch.manual_seed(seed)
    return transformers.CLIPModel(config).eval()


def _features(out):
    return getattr(out, "pooler_output", out) if not isinstance(out, torch.Tensor) else out


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory, tiny):
    model = hf_clip_like_tiny()
    folder = tmp_path_factory.mktemp("hf") / "clip-tiny"
    model.save_pretrained(folder)
    return folder, model


@pytest.mark.parametrize("what", ["folder", "file"])
def test_transformers_clip_loads_with_equal_features(hf_folder, what):
    folder, hf = hf_folder
    source = folder if what == "folder" else folder / "model.safetensors"
    clip, _, _, tokenizer = load_clip(TINY_MODEL, str(source), device="cpu")
    from glad.models import uses_quick_gelu

    assert uses_quick_gelu(clip)  # from the config.json's hidden_act, no guessing
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = tokenizer(["a photo of a cat", "a red circle", "x"])
    with torch.no_grad():
        ours_img, ours_txt = clip.encode_image(images), clip.encode_text(tokens)
        theirs_img = _features(hf.get_image_features(pixel_values=images))
        theirs_txt = _features(hf.get_text_features(input_ids=tokens))
    torch.testing.assert_close(ours_img, theirs_img, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_txt, theirs_txt, rtol=0, atol=1e-5)
    torch.testing.assert_close(clip.logit_scale, hf.logit_scale)


def test_transformers_clip_of_another_shape_names_the_fitting_model(hf_folder):
    folder, _ = hf_folder
    with pytest.raises(ValueError, match="do not fit") as err:
        load_clip("ViT-B-32", str(folder), device="meta")
    assert "\n" not in str(err.value)


def test_open_clip_folder_as_pretrained_points_to_local_dir(tmp_path):
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(ValueError, match="--model local-dir:"):
        load_clip("ViT-B-16", str(tmp_path), device="meta")


def test_local_dir_folder_is_a_base_model(tmp_path, tiny):
    from safetensors.torch import save_file

    ref, _, _, tokenizer = load_clip(TINY_MODEL, None, device="cpu")
    folder = tmp_path / "my model"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": tiny_clip_config(),
                                                              "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}))
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, folder / "open_clip_model.safetensors")
    clip, _, pre_val, _ = load_clip(f"local-dir:{folder}", None, device="cpu")
    tokens = tokenizer(["a photo of a dog"])
    with torch.no_grad():
        torch.testing.assert_close(clip.encode_text(tokens), ref.encode_text(tokens), rtol=0, atol=0)
    from glad.data import Preprocess

    assert Preprocess.of_model(clip).mean == (0.5, 0.5, 0.5)  # the folder's own preprocessing
    with pytest.raises(ValueError, match="open_clip_config.json"):
        load_clip(f"local-dir:{tmp_path / 'nothing'}", None)


def make_tokenizer_folder(folder, words=("a", "photo", "of", "red", "circle", "blue", "square")):
    """A tokenizer trained offline with the `tokenizers` package, saved as a Hugging Face folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(words)], trainer=trainers.WordLevelTrainer(
        special_tokens=["<pad>", "<unk>", "<eos>"]))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                                unk_token="<unk>")
    fast.save_pretrained(folder)
    return folder


def test_local_tokenizer_serves_a_siglip_config(tmp_path):
    folder = make_tokenizer_folder(tmp_path / "tok")
    with pytest.raises(Exception, match="--tokenizer PATH") as err:  # offline: the config's is not cached
        load_clip("ViT-B-16-SigLIP2", None, device="meta")
    assert "\n" not in str(err.value)
    for path in (folder, folder / "tokenizer.json"):
        _, _, _, tokenizer = load_clip("ViT-B-16-SigLIP2", None, device="meta", tokenizer=str(path))
        tokens = tokenizer(["a photo of a red circle", "blue square"])
        assert tokens.shape == (2, 64)  # the model's context length
        assert tokens[0, :6].tolist() == tokenizer.tokenizer(["a photo of a red circle"])["input_ids"][0][:6]
    with pytest.raises(ValueError, match="no such file"):
        load_clip("ViT-B-16-SigLIP2", None, device="meta", tokenizer=str(tmp_path / "missing"))
