"""Few-shot draws: identical to a plain re-implementation of Dassl's sampler; JSON cache."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from data_fixtures import dassl_reference_draw, make_coop_dataset, write_image

import glad.data as gd
from glad.data import shots as fewshot_module

# every test with its own GLAD_CACHE (the few-shot draws are cached there)
pytestmark = pytest.mark.usefixtures("cache")


def uneven(label: int) -> tuple[int, int, int]:
    # classes larger and smaller than K, so both branches of the sampler run
    return (3 + (label * 5) % 19, 1 + label % 6, 2)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", ["oxford_pets", "fgvc_aircraft", "dtd"])
def test_draw_matches_dassl_for_seeds_1_2_3(tmp_path, name, seed):
    make_coop_dataset(tmp_path, name, n_classes=9, per_class=uneven, shuffle_seed=11)
    ds = gd.build_dataset(name, tmp_path)
    # items are shuffled in the split file: labels are first seen out of order
    first_seen = list(dict.fromkeys(d.label for d in ds.train))
    assert first_seen != sorted(first_seen)
    for shots in (1, 2, 4, 16):
        got = gd.fewshot(ds, shots, seed, use_cache=False)
        ref_train, ref_val = dassl_reference_draw(ds.train, ds.val, shots, seed)
        assert got.train == ref_train  # same items, same order
        assert got.val == ref_val
        assert got.test == ds.test and got.classnames == ds.classnames
        per_class = {y: sum(d.label == y for d in got.train) for y in range(ds.num_classes)}
        sizes = {y: sum(d.label == y for d in ds.train) for y in range(ds.num_classes)}
        assert per_class == {y: min(shots, sizes[y]) for y in sizes}
        assert got.info["shots"] == shots and got.info["seed"] == seed


def test_seeds_differ_and_repeat_matches_dassl(tmp_path):
    make_coop_dataset(tmp_path, "eurosat", n_classes=10, per_class=uneven)
    ds = gd.build_dataset("eurosat", tmp_path)
    draws = [gd.fewshot(ds, 4, s, use_cache=False).train for s in (1, 2, 3)]
    assert draws[0] != draws[1] != draws[2]
    got = gd.fewshot(ds, 16, 2, repeat=True, use_cache=False)
    assert (got.train, got.val) == dassl_reference_draw(ds.train, ds.val, 16, 2, repeat=True)
    assert len(got.train) == 16 * 10


def test_global_random_state_is_left_alone(tmp_path):
    make_coop_dataset(tmp_path, "dtd", n_classes=3, per_class=5)
    ds = gd.build_dataset("dtd", tmp_path)
    random.seed(123)
    expected = random.random()
    random.seed(123)
    gd.fewshot(ds, 2, 1, use_cache=False)
    assert random.random() == expected


def test_imagenet_draws_train_only_val_stays_test(tmp_path):
    make_coop_dataset(tmp_path, "imagenet", n_classes=5, per_class=(7, 0, 3), shuffle_seed=2)
    ds = gd.build_dataset("imagenet", tmp_path)
    for seed in (1, 2, 3):
        got = gd.fewshot(ds, 4, seed)
        ref_train, _ = dassl_reference_draw(ds.train, [], 4, seed)
        assert got.train == ref_train
        assert got.val is ds.test and got.test is ds.test and got.val_is_test


def test_draw_is_over_all_classes_before_the_base_novel_cut(tmp_path):
    make_coop_dataset(tmp_path, "oxford_pets", n_classes=7, per_class=uneven, shuffle_seed=4)
    ds = gd.build_dataset("oxford_pets", tmp_path)
    base = gd.subsample_classes(gd.fewshot(ds, 4, 1), "base")
    ref_train, _ = dassl_reference_draw(ds.train, ds.val, 4, 1)
    expected = [gd.Datum(d.impath, d.label, d.classname) for d in ref_train if d.label < 4]
    assert base.train == expected  # base labels are 0..3 already, so relabelling keeps them
    assert base.num_classes == 4


def _written(ds, shots, seed):
    """Where a new draw of `ds` is cached: glad's cache folder, never the data folder."""
    return Path(fewshot_module.cache_candidates(ds, shots, seed)[-1])


def test_cache_is_json_in_the_glad_cache_and_reused(tmp_path, monkeypatch):
    mini = make_coop_dataset(tmp_path, "caltech101", n_classes=4, per_class=(6, 3, 2))
    before = sorted(p for p in mini.folder.rglob("*"))
    ds = gd.build_dataset("caltech101", tmp_path)
    first = gd.fewshot(ds, 2, 3)
    path = _written(ds, 2, 3)
    assert str(path).startswith(str(tmp_path / "glad-cache"))
    assert sorted(p for p in mini.folder.rglob("*")) == before  # nothing written into the data folder
    data = json.loads(path.read_text())  # JSON, never a pickle
    assert data["shots"] == 2 and data["seed"] == 3 and data["dataset"] == "caltech101"
    assert len(data["train"]) == 8 and len(data["val"]) == 8  # val: min(K, 4) = 2 a class
    assert all(not os.path.isabs(p) for p, _, _ in data["train"])  # relative: the folder can move
    assert not list(path.parent.glob("*.tmp"))

    def no_draw(*args, **kwargs):
        raise AssertionError("the cached draw should have been reused")

    monkeypatch.setattr(fewshot_module, "draw_fewshot", no_draw)
    again = gd.fewshot(gd.build_dataset("caltech101", tmp_path), 2, 3)
    assert again.train == first.train and again.val == first.val


def test_cache_naming_items_not_in_the_dataset_is_redrawn(tmp_path):
    make_coop_dataset(tmp_path, "dtd", n_classes=3, per_class=(5, 2, 1))
    ds = gd.build_dataset("dtd", tmp_path)
    gd.fewshot(ds, 2, 1)
    path = _written(ds, 2, 1)
    data = json.loads(path.read_text())
    data["train"][0][0] = "banded/not_there.jpg"
    data.pop("source")  # a hand-made cache without fingerprint is checked item by item
    path.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="not in dtd"):
        got = gd.fewshot(ds, 2, 1)
    assert got.train == dassl_reference_draw(ds.train, ds.val, 2, 1)[0]
    assert "not_there" not in path.read_text()  # rewritten


def test_cache_of_a_changed_dataset_is_redrawn(tmp_path):
    mini = make_coop_dataset(tmp_path, "oxford_pets", n_classes=3, per_class=(5, 2, 1))
    ds = gd.build_dataset("oxford_pets", tmp_path)
    gd.fewshot(ds, 2, 1)
    split_path = mini.folder / "split_zhou_OxfordPets.json"
    split = json.loads(split_path.read_text())
    split["train"].insert(0, ["Abyssinian_999.jpg", 0, "abyssinian"])
    write_image(mini.folder / "images" / "Abyssinian_999.jpg", 0)
    split_path.write_text(json.dumps(split))
    ds2 = gd.build_dataset("oxford_pets", tmp_path)
    with pytest.warns(UserWarning, match="changed"):
        got = gd.fewshot(ds2, 2, 1)
    assert got.train == dassl_reference_draw(ds2.train, ds2.val, 2, 1)[0]


def test_corrupt_cache_is_redrawn(tmp_path):
    mini = make_coop_dataset(tmp_path, "dtd", n_classes=2, per_class=(4, 2, 1))
    ds = gd.build_dataset("dtd", tmp_path)
    (mini.folder / "split_fewshot").mkdir()
    (mini.folder / "split_fewshot" / "shot_2-seed_1.json").write_text("{broken")
    with pytest.warns(UserWarning, match="not used"):
        got = gd.fewshot(ds, 2, 1)
    assert got.train == dassl_reference_draw(ds.train, ds.val, 2, 1)[0]


def test_draw_cached_next_to_the_data_by_earlier_versions_is_read(tmp_path, monkeypatch):
    mini = make_coop_dataset(tmp_path, "food101", n_classes=3, per_class=(4, 2, 1))
    ds = gd.build_dataset("food101", tmp_path)
    got = gd.fewshot(ds, 2, 2)
    old = mini.folder / "split_fewshot" / "shot_2-seed_2.json"
    old.parent.mkdir()
    _written(ds, 2, 2).rename(old)
    monkeypatch.setattr(fewshot_module, "draw_fewshot", None)  # must come from that file now
    assert gd.fewshot(ds, 2, 2).train == got.train


def test_explicit_cache_dir_and_nothing_writable(tmp_path, monkeypatch):
    mini = make_coop_dataset(tmp_path, "eurosat", n_classes=2, per_class=(3, 2, 1))
    ds = gd.build_dataset("eurosat", tmp_path)
    gd.fewshot(ds, 1, 1, cache_dir=tmp_path / "mine")
    assert len(list((tmp_path / "mine" / "fewshot").glob("*/shot_1-seed_1.json"))) == 1
    assert not (mini.folder / "split_fewshot").exists()

    def nowhere(path, text):
        raise OSError(30, "Read-only file system", path)

    monkeypatch.setattr(fewshot_module, "atomic_write_text", nowhere)
    with pytest.warns(UserWarning, match="could not cache"):
        got = gd.fewshot(ds, 2, 1)
    assert got.train == dassl_reference_draw(ds.train, ds.val, 2, 1)[0]


def test_shots_below_one_and_bad_arguments(tmp_path):
    make_coop_dataset(tmp_path, "dtd", n_classes=2, per_class=2)
    ds = gd.build_dataset("dtd", tmp_path)
    assert gd.fewshot(ds, 0, 1) is ds and gd.fewshot(ds, -1, 1) is ds
    with pytest.raises(TypeError, match="seed"):
        gd.fewshot(ds, 2, "1")
    with pytest.raises(TypeError, match="shots"):
        gd.fewshot(ds, 2.0, 1)


def test_user_datasets_cache_in_glad_cache_not_in_their_folder(tmp_path):
    from data_fixtures import make_imagefolder

    folder = make_imagefolder(tmp_path / "mine", n_classes=2, per_class=6)
    ds = gd.build_dataset(f"imagefolder:{folder}")
    gd.fewshot(ds, 2, 1)
    assert sorted(p.name for p in folder.iterdir()) == ["class_0", "class_1"]
    assert len(list((tmp_path / "glad-cache" / "fewshot").glob("*/shot_2-seed_1.json"))) == 1
    assert gd.build_dataset(f"imagefolder:{folder}").classnames == ["class_0", "class_1"]
