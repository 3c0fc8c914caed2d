"""Images decoded once: the same batches and the same accuracies as decoding the files each time."""

from __future__ import annotations

import json
import os

import pytest
import torch
from click.testing import CliRunner
from data_fixtures import make_coop_dataset
from engine_fixtures import base_flags, register_tiny_model
from glad_cli.main import cli
from PIL import Image

import glad.data as gd
from glad.config import TrainConfig, default_workers
from glad.data.decoded import DecodedImages, PreparedTestImages, fits
from glad.engine.results import read_records
from glad.engine.runtime import setup_runtime
from glad.engine.train import make_train_loader


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A dataset of JPEGs of uneven, realistic aspect (the crop works on the original size)."""
    root = tmp_path_factory.mktemp("photos")
    mini = make_coop_dataset(root, "dtd", n_classes=3, per_class=(6, 2, 4))
    g = torch.Generator().manual_seed(0)
    for i, path in enumerate(sorted(mini.folder.rglob("*.jpg"))):
        w, h = (120, 90) if i % 2 else (75, 100)
        pixels = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(path, quality=90)
    return gd.build_dataset("dtd", root)


def test_decoded_once_gives_the_batches_of_decoding_every_epoch(photos):
    runtime = setup_runtime("cpu")
    transform = gd.train_transform(32)
    batches = {}
    for gb in (0.0, 1.0):
        cfg = TrainConfig(batch_size=4, image_cache_gb=gb)
        loader, sampler = make_train_loader(photos.train, transform, cfg, 1, runtime, workers=2)
        expected_type = DecodedImages if gb else gd.ImageDataset
        assert isinstance(loader.dataset.dataset, expected_type) and loader.persistent_workers
        got = []
        for epoch in range(3):
            sampler.set_epoch(epoch)
            got += [(x.clone(), y.clone()) for x, y in loader]
        batches[gb] = got
    assert len(batches[0.0]) == 3 * (len(photos.train) // 4)
    for (a, la), (b, lb) in zip(batches[0.0], batches[1.0], strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_prepared_test_images_normalise_to_the_test_transform_bit_for_bit(photos):
    prepared = PreparedTestImages(photos.test, 32, workers=2)
    transform = gd.test_transform(32)
    want = torch.stack([transform(gd.load_image(d.impath)) for d in photos.test])
    assert torch.equal(prepared.preprocess.normalize(prepared.pixels), want)
    assert prepared.labels.tolist() == [d.label for d in photos.test]


def test_over_budget_sets_are_decoded_from_the_files(photos, caplog):
    with caplog.at_level("INFO", logger="glad"):
        assert not fits(photos.train, 1e-9, "training images")
    assert "--image-cache-gb" in caplog.text
    assert fits(photos.train, 1.0, "training images")


def test_worker_default_is_the_usable_cpus_at_most_16():
    usable = len(os.sched_getaffinity(0))
    assert default_workers() == max(1, min(16, usable))
    assert TrainConfig().workers is None
    res = CliRunner().invoke(cli, ["train", "--help"])
    assert "usable CPUs, at" in res.output and f"here {default_workers()}" in res.output


def test_cached_evaluation_gives_the_same_records(tmp_path):
    register_tiny_model(tmp_path / "models")
    root = tmp_path / "data"
    make_coop_dataset(root, "dtd", n_classes=4, per_class=(4, 2, 3))
    make_coop_dataset(root, "eurosat", n_classes=4, per_class=(4, 2, 3))
    keep = ("method", "train_dataset", "eval_dataset", "split", "seed", "accuracy", "num_samples")
    records = {}
    for gb in ("0", "8"):
        out = tmp_path / f"run{gb}"
        res = CliRunner().invoke(cli, ["train", *base_flags(root, out, **{"--epochs": 1, "--image-cache-gb": gb}),
                                       "--dataset", "dtd", "--dataset", "eurosat", "--method", "zeroshot",
                                       "--method", "lora", "--method", "glad", "--seeds", "1", "--seeds", "2"])
        assert res.exit_code == 0, res.output
        records[gb] = sorted(json.dumps({k: r[k] for k in keep}) for r in read_records(str(out / "results.jsonl")))
    assert records["0"] == records["8"] and len(records["0"]) == 3 * 2 * 2 * 2


def test_every_unreadable_image_is_named_at_once(tmp_path):
    from data_fixtures import corrupt_image, write_image

    from glad.data.decoded import DecodedImages, header_sizes
    from glad.data.types import CorruptImageError, Datum

    paths = [write_image(tmp_path / f"img{i}.png", i) for i in range(25)]
    for p in paths[:23]:  # a cut file: its header reads, its pixels do not
        corrupt_image(p)
    items = [Datum(str(p), 0, "x") for p in paths]
    for workers in (0, 2):
        with pytest.raises(CorruptImageError) as err:
            DecodedImages(items, None, workers=workers)
        message = str(err.value)
        assert message.startswith("cannot decode 23 image(s)") and "and 3 more" in message and "\n" not in message
    for p in paths[:3]:  # not an image at all: the header fails too
        p.write_bytes(b"not an image")
    with pytest.raises(CorruptImageError, match="cannot decode 3 image"):
        header_sizes(items)
