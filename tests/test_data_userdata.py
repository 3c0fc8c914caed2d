"""Users' own data: image folders, CoOp-format split files, CSV files."""

from __future__ import annotations

import os

import pytest
from data_fixtures import make_imagefolder, write_image, write_split_json

import glad.data as gd
from glad.data.userdata import SPLIT_SEED, seeded_split


def test_flat_imagefolder_is_split_by_seed(tmp_path):
    folder = make_imagefolder(tmp_path / "pics", n_classes=3, per_class=10,
                              classnames=["zebra_finch", "apple", "moth"])
    (folder / "apple" / "notes.txt").write_text("not an image")
    (folder / "apple" / ".hidden.png").write_bytes(b"")
    ds = gd.build_dataset(f"imagefolder:{folder}")
    assert ds.name == f"imagefolder:{folder}"
    assert ds.classnames == ["apple", "moth", "zebra_finch"]  # sorted folder names
    assert ds.template == "a photo of a {}."
    assert ds.prompts()[2] == "a photo of a zebra finch."
    for y in range(3):
        assert [sum(d.label == y for d in s) for s in (ds.train, ds.val, ds.test)] == [5, 2, 3]
    every = ds.train + ds.val + ds.test
    assert len(set(every)) == 30 and all(d.impath.endswith(".png") for d in every)
    assert all(os.path.basename(os.path.dirname(d.impath)) == d.classname for d in every)
    again = gd.build_dataset(f"imagefolder:{folder}")
    assert again.train == ds.train and again.test == ds.test  # deterministic


def test_imagefolder_with_split_levels(tmp_path):
    folder = make_imagefolder(tmp_path / "lv", n_classes=2, per_class=3, splits=("train", "test"))
    write_image(folder / "test" / "class_2" / "x.jpg", 2)  # a class only in test
    ds = gd.build_dataset(f"imagefolder:{folder}")
    assert ds.classnames == ["class_0", "class_1", "class_2"]
    assert len(ds.train) == 6 and ds.val == [] and len(ds.test) == 7
    assert all(f"{os.sep}train{os.sep}" in d.impath for d in ds.train)


def test_imagefolder_with_nested_images_and_class_named_like_a_split(tmp_path):
    folder = tmp_path / "nest"
    write_image(folder / "test" / "a" / "1.png", 0)  # "test" is a class here: "other" is not a split
    write_image(folder / "other" / "deep" / "er" / "2.png", 1)
    write_image(folder / "other" / "3.png", 1)
    ds = gd.build_dataset(f"imagefolder:{folder}")
    assert ds.classnames == ["other", "test"]
    assert len(ds.train + ds.val + ds.test) == 3


def test_imagefolder_errors(tmp_path):
    with pytest.raises(gd.MissingDataError, match="nope"):
        gd.build_dataset(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(gd.DatasetError, match="no class folders"):
        gd.build_dataset(f"imagefolder:{tmp_path / 'empty'}")
    (tmp_path / "noimg" / "cls").mkdir(parents=True)
    (tmp_path / "noimg" / "cls" / "a.txt").write_text("x")
    with pytest.raises(gd.DatasetError, match="no images"):
        gd.build_dataset(f"imagefolder:{tmp_path / 'noimg'}")


@pytest.mark.parametrize("n,expected", [(1, (1, 0, 0)), (2, (1, 0, 1)), (3, (1, 1, 1)), (4, (2, 1, 1)),
                                        (10, (5, 2, 3)), (16, (8, 3, 5))])
def test_seeded_split_sizes(n, expected):
    items = [gd.Datum(f"/x/{i}.png", 0, "c") for i in range(n)]
    out = seeded_split(items, SPLIT_SEED)
    assert tuple(len(out[s]) for s in ("train", "val", "test")) == expected
    assert sorted(out["train"] + out["val"] + out["test"], key=lambda d: d.impath) == \
        sorted(items, key=lambda d: d.impath)


def test_user_split_json_relative_to_its_folder(tmp_path):
    for i in range(4):
        write_image(tmp_path / "imgs" / f"{i}.jpg", i % 2)
    path = write_split_json(tmp_path / "my_split.json", {
        "train": [["imgs/0.jpg", 0, "red_fox"], ["imgs/1.jpg", 1, "owl"]],
        "val": [["imgs/2.jpg", 0, "red_fox"]],
        "test": [["imgs/3.jpg", 1, "owl"]],
    })
    ds = gd.build_dataset(str(path))
    assert ds.classnames == ["red_fox", "owl"]
    assert ds.train[1].impath == str(tmp_path / "imgs" / "1.jpg")
    # a relative path is also looked up under the data root
    assert gd.build_dataset("my_split.json", tmp_path).classnames == ["red_fox", "owl"]
    (tmp_path / "imgs" / "3.jpg").unlink()
    with pytest.raises(gd.MissingDataError, match=r"3\.jpg"):
        gd.build_dataset(str(path))
    with pytest.raises(gd.MissingDataError, match="missing.json"):
        gd.build_dataset(str(tmp_path / "missing.json"))


def test_csv_with_class_names_and_split_column(tmp_path):
    for i in range(6):
        write_image(tmp_path / "d" / f"{i}.png", i)
    (tmp_path / "data.csv").write_text(
        "path,label,split\n"
        "d/0.png,tabby cat,train\nd/1.png,dog,train\nd/2.png,tabby cat,val\n"
        "d/3.png,dog,test\nd/4.png,tabby cat,test\nd/5.png,dog,train\n")
    ds = gd.build_dataset(str(tmp_path / "data.csv"))
    assert ds.classnames == ["dog", "tabby cat"]
    assert [d.label for d in ds.train] == [1, 0, 0] and len(ds.val) == 1 and len(ds.test) == 2


def test_csv_with_integer_labels(tmp_path):
    for i in range(6):
        write_image(tmp_path / f"{i}.png", i)
    (tmp_path / "a.csv").write_text("".join(f"{i}.png,{i % 2}\n" for i in range(6)))
    with pytest.warns(UserWarning, match="classname column"):
        ds = gd.build_dataset(str(tmp_path / "a.csv"))
    assert ds.classnames == ["0", "1"] and len(ds.train + ds.val + ds.test) == 6
    (tmp_path / "b.csv").write_text("path,label,classname\n" +
                                    "".join(f"{i}.png,{i % 2},{'cat' if i % 2 else 'dog'}\n" for i in range(6)))
    assert gd.build_dataset(str(tmp_path / "b.csv")).classnames == ["dog", "cat"]
    (tmp_path / "c.csv").write_text("0.png,cat,holdout\n")
    with pytest.raises(gd.DatasetError, match="'holdout'"):
        gd.build_dataset(str(tmp_path / "c.csv"))


def test_symlink_cycles_are_refused_and_linked_folders_read_once(tmp_path):
    folder = make_imagefolder(tmp_path / "shapes", n_classes=2, per_class=2)
    (folder / "class_0" / "again").symlink_to(folder / "class_1")
    ds = gd.build_dataset(f"imagefolder:{folder}")
    assert sum(1 for split in (ds.train, ds.val, ds.test) for d in split) == 6  # class_1's 2 read twice: as linked
    (folder / "class_1" / "loop").symlink_to(folder)
    with pytest.raises(gd.DatasetError, match="a cycle"):
        gd.build_dataset(f"imagefolder:{folder}")


def test_a_class_missing_from_a_split_is_named(tmp_path):
    folder = make_imagefolder(tmp_path / "shapes", n_classes=2, per_class=2, splits=("train",),
                              classnames=["red_circle", "blue"])
    make_imagefolder(folder / "test", per_class=2, classnames=["Red_Circle", "blue"])
    with pytest.warns(UserWarning, match=r"red_circle \(here: Red_Circle\).*differ in case"):
        gd.build_dataset(f"imagefolder:{folder}")


@pytest.mark.parametrize("header", ["", "path,label\n"])
def test_csv_errors_name_the_files_line(tmp_path, header):
    write_image(tmp_path / "a.png", 0)
    (tmp_path / "d.csv").write_text(header + "a.png,cat\n\nb.png\n")  # line 3 (or 4): no label
    line = 3 + bool(header)
    with pytest.raises(gd.DatasetError, match=f"row {line} is"):
        gd.build_dataset(str(tmp_path / "d.csv"))
