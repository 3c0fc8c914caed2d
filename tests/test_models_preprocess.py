"""The model's own preprocessing: glad's evaluation transform is open_clip's `preprocess_val`
for the tag, bit for bit; training keeps CoOp's crop at the model's size and normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

open_clip = pytest.importorskip("open_clip")

from glad.data import Preprocess, test_transform, train_transform  # noqa: E402
from glad.data.decoded import PreparedTestImages  # noqa: E402
from glad.data.types import Datum  # noqa: E402
from glad.models import loading  # noqa: E402

TAGS = [("ViT-B-16", "openai"), ("ViT-L-14", "laion2b_s32b_b82k"), ("ViT-L-14-CLIPA", "datacomp1b"),
        ("ViT-H-14-378-quickgelu", "dfn5b")]


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (301, 457, 3), dtype=np.uint8)).save(path)
    return path


def _load_without_download(monkeypatch, name, tag):
    """glad's loader for (name, tag) with the download skipped: preprocessing needs no weights."""
    monkeypatch.setattr(loading, "_download_tag", lambda *a, **k: None)
    monkeypatch.setattr(loading, "load_weights", lambda *a, **k: None)
    monkeypatch.setattr(loading, "load_tokenizer", lambda *a, **k: None)  # CLIPA's is downloaded
    return loading.load_clip(name, tag, device="meta")


@pytest.mark.parametrize("name,tag", TAGS)
def test_eval_transform_is_open_clips_preprocess_val_bit_for_bit(monkeypatch, photo, name, tag):
    clip, _, pre_val, _ = _load_without_download(monkeypatch, name, tag)
    ours = Preprocess.of_model(clip)
    # the reference: open_clip's transform for the tag's own config, built independently
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    model_pp = open_clip.get_model_config(name)["vision_cfg"].get("image_size", 224)
    cfg = merge_preprocess_dict(PreprocessCfg(size=model_pp), open_clip.get_pretrained_cfg(name, tag))
    reference = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    image = Image.open(photo).convert("RGB")
    want = reference(image)
    assert torch.equal(ours.test_transform()(image), want)
    assert torch.equal(pre_val(image), want)  # what open_clip's factory returned
    # the prepared (decode-once) path gives the same tensor
    prepared = PreparedTestImages([Datum(str(photo), 0, "x")], ours)
    assert torch.equal(prepared.preprocess.normalize(prepared.pixels)[0], want)
    pretrained_cfg = open_clip.get_pretrained_cfg(name, tag)
    assert ours.mean == tuple(pretrained_cfg["mean"]) and ours.resize_mode == pretrained_cfg["resize_mode"]


def test_openai_vit_b16_transforms_unchanged(monkeypatch, photo):
    """For OpenAI ViT-B/16 glad's transforms are exactly the ones it always used."""
    from torchvision import transforms as T

    clip, *_ = _load_without_download(monkeypatch, "ViT-B-16", "openai")
    ours = Preprocess.of_model(clip)
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    before_test = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                             T.ToTensor(), T.Normalize(mean, std)])
    image = Image.open(photo).convert("RGB")
    assert torch.equal(ours.test_transform()(image), before_test(image))
    assert torch.equal(test_transform(224)(image), before_test(image))
    before_train = T.Compose([T.RandomResizedCrop(224, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                              T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    for transform in (ours.train_transform(), train_transform(224)):
        torch.manual_seed(3)
        got = transform(image)
        torch.manual_seed(3)
        assert torch.equal(got, before_train(image))


def test_train_transform_uses_the_models_size_interpolation_and_statistics(monkeypatch):
    clip, *_ = _load_without_download(monkeypatch, "ViT-L-14-CLIPA", "datacomp1b")
    steps = Preprocess.of_model(clip).train_transform((0.5, 1.0)).transforms
    crop, normalize = steps[0], steps[-1]
    assert crop.size == (224, 224) and crop.scale == (0.5, 1.0)
    assert crop.interpolation.value == "bilinear"
    assert tuple(normalize.mean) == (0.485, 0.456, 0.406)


def test_preprocess_round_trips_through_a_dict():
    pp = Preprocess(size=(336, 336), mean=0.5, std=(0.5, 0.5, 0.5), interpolation="bilinear", resize_mode="squash")
    assert Preprocess.from_dict(pp.to_dict()) == pp
    with pytest.raises(ValueError, match="resize mode"):
        Preprocess(resize_mode="crop")
