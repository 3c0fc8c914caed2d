"""Loaders: CLIP transforms, decoding, corrupt-image handling, seeded shuffles, workers."""

from __future__ import annotations

import pytest
import torch
from data_fixtures import corrupt_image, make_coop_dataset, write_image
from torchvision import transforms as T

import glad.data as gd


def items_in(tmp_path, n=6, ext=".jpg"):
    return [gd.Datum(str(write_image(tmp_path / f"{i}{ext}", i % 3, size=12 + i)), i % 3, f"c{i % 3}")
            for i in range(n)]


def test_transforms_follow_spec_section_4():
    train = gd.train_transform(32).transforms
    assert isinstance(train[0], T.RandomResizedCrop) and train[0].scale == (0.08, 1.0)
    assert train[0].interpolation == T.InterpolationMode.BICUBIC and train[0].size == (32, 32)
    assert isinstance(train[1], T.RandomHorizontalFlip)
    assert isinstance(train[-1], T.Normalize)
    assert tuple(train[-1].mean) == gd.CLIP_MEAN and tuple(train[-1].std) == gd.CLIP_STD
    test = gd.test_transform(32).transforms
    assert isinstance(test[0], T.Resize) and test[0].size == 32  # short side
    assert test[0].interpolation == T.InterpolationMode.BICUBIC
    assert isinstance(test[1], T.CenterCrop) and test[1].size == (32, 32)
    assert tuple(test[-1].mean) == gd.CLIP_MEAN


def test_image_dataset_gives_normalised_tensors_and_labels(tmp_path):
    items = items_in(tmp_path)
    ds = gd.ImageDataset(items, gd.test_transform(16))
    assert len(ds) == 6
    x, y = ds[4]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 1
    # normalisation: a pixel value v maps to (v - mean) / std
    raw = T.ToTensor()(T.CenterCrop(16)(T.Resize(16, T.InterpolationMode.BICUBIC)(gd.load_image(items[4].impath))))
    mean = torch.tensor(gd.CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(gd.CLIP_STD).view(3, 1, 1)
    assert torch.allclose(x, (raw - mean) / std, atol=1e-6)
    image, _ = gd.ImageDataset(items)[0]  # no transform: the PIL image, RGB
    assert image.mode == "RGB"


def test_grayscale_and_png_images_become_rgb(tmp_path):
    from PIL import Image

    Image.new("L", (9, 7), 128).save(tmp_path / "g.png")
    x, _ = gd.ImageDataset([gd.Datum(str(tmp_path / "g.png"), 0, "g")], gd.test_transform(8))[0]
    assert x.shape == (3, 8, 8)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_image_is_reported_by_path(tmp_path, damage):
    items = items_in(tmp_path, 3)
    bad = items[1].impath
    if damage == "truncate":
        corrupt_image(bad)
    elif damage == "garbage":
        open(bad, "wb").write(b"this is not a jpeg" * 5)
    else:
        open(bad, "wb").close()
    ds = gd.ImageDataset(items, gd.test_transform(8))
    ds[0]
    with pytest.raises(gd.CorruptImageError, match=bad.replace(".", r"\.")) as e:
        ds[1]
    assert "skip_corrupt" in str(e.value)


def test_missing_image_at_load_time_names_the_path(tmp_path):
    items = items_in(tmp_path, 2)
    (tmp_path / "1.jpg").unlink()
    with pytest.raises(gd.MissingDataError, match=r"1\.jpg"):
        gd.ImageDataset(items)[1]


def test_skip_corrupt_substitutes_and_counts(tmp_path):
    items = items_in(tmp_path, 4)
    corrupt_image(items[1].impath)
    corrupt_image(items[2].impath)
    ds = gd.ImageDataset(items, gd.test_transform(8), skip_corrupt=True)
    with pytest.warns(UserWarning, match="skipped"):
        x, y = ds[1]
    assert x.shape == (3, 8, 8) and y == items[1].label
    assert torch.equal(x, ds[3][0])  # the next readable image stood in
    assert ds.num_corrupt == 2
    for d in items:
        corrupt_image(d.impath)
    with pytest.raises(gd.CorruptImageError, match="none of the 4"), pytest.warns(UserWarning):
        ds[0]


def test_loader_is_seeded_and_batches(tmp_path):
    items = items_in(tmp_path, 10)

    def order(seed):
        loader = gd.make_loader(items, gd.test_transform(8), batch_size=4, shuffle=True, workers=0, seed=seed)
        return [y for _, ys in loader for y in ys.tolist()]

    assert order(1) == order(1) and order(1) != order(2)
    loader = gd.make_loader(items, gd.test_transform(8), batch_size=4, shuffle=False, workers=0, drop_last=True)
    batches = list(loader)
    assert len(batches) == 2 and batches[0][0].shape == (4, 3, 8, 8)
    assert loader.pin_memory == torch.cuda.is_available()
    custom = torch.utils.data.SequentialSampler(range(3))
    assert len(list(gd.make_loader(items, gd.test_transform(8), 2, True, 0, sampler=custom))) == 2


def test_loader_with_worker_processes_counts_skips_across_them(tmp_path):
    mini = make_coop_dataset(tmp_path, "dtd", n_classes=2, per_class=(4, 1, 1))
    ds = gd.build_dataset("dtd", tmp_path)
    corrupt_image(ds.train[0].impath)
    corrupt_image(ds.train[5].impath)
    loader = gd.make_loader(ds.train, gd.train_transform(8), batch_size=4, shuffle=True, workers=2, seed=0,
                            skip_corrupt=True)
    labels = sorted(y for _, ys in loader for y in ys.tolist())  # skips warn inside the workers
    assert labels == sorted(d.label for d in ds.train)
    assert loader.dataset.num_corrupt == 2
    assert mini.counts["train"] == 8
