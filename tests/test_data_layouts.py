"""glad.data readers against miniature replicas of every CoOp layout (tests/data_fixtures.py)."""

from __future__ import annotations

import json
import os

import pytest
from data_fixtures import (
    ALL_COOP,
    FOLDERS,
    SPLIT_LAYOUTS,
    make_coop_dataset,
    wnid,
    write_split_json,
)

import glad.data as gd
from glad import providers
from glad.data import registry

SPLIT_FILE_DATASETS = tuple(SPLIT_LAYOUTS)
TEST_ONLY = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")


@pytest.mark.parametrize("name", ALL_COOP)
def test_every_layout_reads_classes_labels_and_counts(tmp_path, name):
    mini = make_coop_dataset(tmp_path, name, n_classes=5, per_class=(3, 2, 2), shuffle_seed=7)
    ds = gd.build_dataset(name, tmp_path)
    assert ds.name == name
    assert ds.classnames == mini.classnames
    assert ds.num_classes == len(mini.classnames)
    assert {s: len(getattr(ds, s)) for s in ("train", "val", "test")} == mini.counts
    assert ds.folder == os.path.join(str(tmp_path), FOLDERS[name])
    assert ds.template == gd.template_for(name)
    for split in (ds.train, ds.val, ds.test):
        for d in split:
            assert isinstance(d, gd.Datum)
            assert 0 <= d.label < ds.num_classes
            assert d.classname == ds.classnames[d.label]
            assert os.path.isfile(d.impath), d.impath
    # every class appears in the test split
    assert {d.label for d in ds.test} == set(range(ds.num_classes))
    if name in TEST_ONLY:
        assert ds.train == [] and ds.val == []


def test_templates_are_coops():
    assert gd.template_for("oxford_pets") == "a photo of a {}, a type of pet."
    assert gd.template_for("dtd") == "{} texture."
    assert gd.template_for("eurosat") == "a centered satellite photo of {}."
    assert gd.template_for("food101") == "a photo of {}, a type of food."
    assert gd.template_for("ucf101") == "a photo of a person doing {}."
    assert gd.template_for("oxford_flowers") == "a photo of a {}, a type of flower."
    assert gd.template_for("fgvc_aircraft") == "a photo of a {}, a type of aircraft."
    for name in ("imagenet", "caltech101", "stanford_cars", "sun397", "imagenet_a"):
        assert gd.template_for(name) == "a photo of a {}."


def test_prompts_turn_underscores_into_spaces_but_names_keep_them(tmp_path):
    make_coop_dataset(tmp_path, "oxford_pets", n_classes=3, per_class=1)
    ds = gd.build_dataset("oxford_pets", tmp_path)
    assert ds.classnames[1] == "american_bulldog"
    assert ds.prompts()[1] == "a photo of a american bulldog, a type of pet."
    assert gd.format_prompt("{} texture.", "bubbly_x") == "bubbly x texture."
    assert ds.prompts("a {}")[2] == "a american pit bull terrier"


def test_imagenet_labels_follow_sorted_wnid_folders_and_val_is_test(tmp_path):
    mini = make_coop_dataset(tmp_path, "imagenet", n_classes=6, per_class=(3, 0, 2), shuffle_seed=3)
    lines = (mini.folder / "classnames.txt").read_text().splitlines()
    assert [ln.split(" ")[0] for ln in lines] != sorted(ln.split(" ")[0] for ln in lines)  # file unsorted
    ds = gd.build_dataset("imagenet", tmp_path)
    assert ds.classnames == mini.classnames  # label = index of the wnid in sorted folder order
    assert ds.val_is_test and ds.val is ds.test
    for d in ds.train:
        assert f"{os.sep}images{os.sep}train{os.sep}{wnid(d.label)}{os.sep}" in d.impath
    for d in ds.test:
        assert f"{os.sep}images{os.sep}val{os.sep}{wnid(d.label)}{os.sep}" in d.impath
    assert ds.classnames[2] == "great white shark"  # multi-word names from classnames.txt


def test_imagenet_a_and_r_use_only_the_folders_present(tmp_path):
    for name in ("imagenet_a", "imagenet_r"):
        mini = make_coop_dataset(tmp_path, name, n_classes=8, per_class=2, n_present=3)
        ds = gd.build_dataset(name, tmp_path)
        assert ds.num_classes == 3
        assert ds.classnames == ["tench", "goldfish", "great white shark"]
        assert sorted({d.label for d in ds.test}) == [0, 1, 2]
        assert len((mini.folder / "classnames.txt").read_text().splitlines()) == 8
    # every other folder present: labels are indices among the present folders
    make_coop_dataset(tmp_path / "b", "imagenet_a", n_classes=6, per_class=1)
    ds = gd.build_dataset("imagenet-a", tmp_path / "b")
    assert ds.classnames == ["tench", "great white shark", "hammerhead shark"]
    assert [d.label for d in ds.test] == [0, 1, 2]


def test_imagenetv2_folder_i_is_line_i(tmp_path):
    mini = make_coop_dataset(tmp_path, "imagenetv2", n_classes=5, per_class=1, shuffle_seed=5)
    file_order = [ln.split(" ", 1)[1] for ln in (mini.folder / "classnames.txt").read_text().splitlines()]
    ds = gd.build_dataset("imagenetv2", tmp_path)
    assert ds.classnames == file_order
    for d in ds.test:
        assert os.path.basename(os.path.dirname(d.impath)) == str(d.label)


def test_stanford_cars_paths_are_relative_to_the_dataset_folder(tmp_path):
    mini = make_coop_dataset(tmp_path, "stanford_cars", n_classes=3, per_class=2)
    ds = gd.build_dataset("stanford_cars", tmp_path)
    assert all(d.impath.startswith(os.path.join(str(mini.folder), "cars_train")) for d in ds.train)
    assert all(d.impath.startswith(os.path.join(str(mini.folder), "cars_test")) for d in ds.test)
    assert ds.classnames[0] == "2000 AM General Hummer SUV"


def test_fgvc_aircraft_reads_variants_and_txt_splits(tmp_path):
    make_coop_dataset(tmp_path, "fgvc_aircraft", n_classes=6, per_class=(2, 1, 1), shuffle_seed=1)
    ds = gd.build_dataset("fgvc_aircraft", tmp_path)
    assert ds.classnames == ["707-320", "727-200", "737-200", "A300B4", "Cessna 172", "DHC-1"]
    cessna = [d for d in ds.train if d.classname == "Cessna 172"]
    assert len(cessna) == 2 and all(d.label == 4 for d in cessna)
    assert all(d.impath.endswith(".jpg") and f"{os.sep}images{os.sep}" in d.impath for d in ds.train)


def test_eurosat_and_sun397_names_come_from_the_split_file(tmp_path):
    make_coop_dataset(tmp_path, "eurosat", n_classes=10, per_class=1)
    ds = gd.build_dataset("eurosat", tmp_path)
    assert ds.classnames[0] == "Annual Crop Land" and ds.classnames[9] == "Sea or Lake"
    assert ds.prompts()[3] == "a centered satellite photo of Highway or Road."
    make_coop_dataset(tmp_path, "sun397", n_classes=5, per_class=1)
    ds = gd.build_dataset("sun397", tmp_path)
    assert ds.classnames[4] == "outdoor apartment_building"
    assert ds.test[-1].impath.endswith(os.path.join("SUN397", "a", "apartment_building", "outdoor",
                                                    os.path.basename(ds.test[-1].impath)))


@pytest.mark.parametrize("name,n,base", [("oxford_pets", 37, 19), ("dtd", 47, 24), ("eurosat", 10, 5),
                                         ("ucf101", 101, 51), ("fgvc_aircraft", 7, 4)])
def test_base_novel_cut(tmp_path, name, n, base):
    make_coop_dataset(tmp_path, name, n_classes=n, per_class=(1, 1, 1))
    ds = gd.build_dataset(name, tmp_path)
    b = gd.subsample_classes(ds, "base")
    v = gd.subsample_classes(ds, "novel")
    assert (b.num_classes, v.num_classes) == (base, n - base)
    assert b.classnames == ds.classnames[:base] and v.classnames == ds.classnames[base:]
    for sub, offset in ((b, 0), (v, base)):
        for split in ("train", "val", "test"):
            items = getattr(sub, split)
            assert sorted({d.label for d in items}) == list(range(sub.num_classes))
            for d in items:
                assert d.classname == sub.classnames[d.label] == ds.classnames[d.label + offset]
    assert gd.subsample_classes(ds, "all") is ds
    assert gd.subsample_classes(ds, "new").classnames == v.classnames  # CoOp's spelling
    with pytest.raises(ValueError, match="base"):
        gd.subsample_classes(ds, "half")


def test_imagenet_base_novel_keeps_val_equal_to_test(tmp_path):
    make_coop_dataset(tmp_path, "imagenet", n_classes=5, per_class=(2, 0, 1))
    ds = gd.subsample_classes(gd.build_dataset("imagenet", tmp_path), "novel")
    assert ds.num_classes == 2 and ds.val is ds.test and [d.label for d in ds.test] == [0, 1]


def test_names_are_normalised_and_unknown_names_listed(tmp_path):
    make_coop_dataset(tmp_path, "oxford_pets", n_classes=2, per_class=1)
    assert gd.build_dataset("Oxford-Pets", tmp_path).name == "oxford_pets"
    with pytest.raises(gd.DatasetError, match="unknown dataset 'pets'.*oxford_pets"):
        gd.build_dataset("pets", tmp_path)


def test_data_root_defaults_to_glad_data(tmp_path, monkeypatch):
    make_coop_dataset(tmp_path, "dtd", n_classes=2, per_class=1)
    monkeypatch.setenv("GLAD_DATA", str(tmp_path))
    assert gd.build_dataset("dtd").num_classes == 2
    monkeypatch.delenv("GLAD_DATA")
    with pytest.raises(gd.MissingDataError, match="--data-root"):
        gd.build_dataset("dtd")


# ---- bad data: every error names the exact path and where to get the data ------------------------

def test_missing_dataset_folder_names_path_and_coop_instructions(tmp_path):
    with pytest.raises(gd.MissingDataError) as e:
        gd.build_dataset("food101", tmp_path)
    msg = str(e.value)
    assert os.path.join(str(tmp_path), "food-101") in msg
    assert "Food101" in msg and gd.COOP_INSTRUCTIONS in msg
    assert isinstance(e.value, FileNotFoundError)
    with pytest.raises(gd.MissingDataError, match="data root"):
        gd.build_dataset("food101", tmp_path / "nowhere")


@pytest.mark.parametrize("name", SPLIT_FILE_DATASETS)
def test_missing_split_file_names_it(tmp_path, name):
    mini = make_coop_dataset(tmp_path, name, n_classes=2, per_class=1)
    split = mini.folder / SPLIT_LAYOUTS[name][2]
    split.unlink()
    with pytest.raises(gd.MissingDataError, match="split file") as e:
        gd.build_dataset(name, tmp_path)
    assert str(split) in str(e.value) and gd.COOP_INSTRUCTIONS in str(e.value)


def test_missing_fgvc_and_imagenet_pieces_are_named(tmp_path):
    mini = make_coop_dataset(tmp_path, "fgvc_aircraft", n_classes=2, per_class=1)
    (mini.folder / "images_variant_val.txt").unlink()
    with pytest.raises(gd.MissingDataError, match="images_variant_val.txt"):
        gd.build_dataset("fgvc_aircraft", tmp_path)
    (mini.folder / "variants.txt").unlink()
    with pytest.raises(gd.MissingDataError, match="variants.txt"):
        gd.build_dataset("fgvc_aircraft", tmp_path)
    mini = make_coop_dataset(tmp_path, "imagenet", n_classes=2, per_class=1)
    (mini.folder / "classnames.txt").unlink()
    with pytest.raises(gd.MissingDataError, match=r"imagenet.*classnames\.txt.*ImageNet"):
        gd.build_dataset("imagenet", tmp_path)
    mini = make_coop_dataset(tmp_path, "imagenetv2", n_classes=3, per_class=1)
    for f in (mini.folder / "imagenetv2-matched-frequency-format-val" / "2").iterdir():
        f.unlink()
    (mini.folder / "imagenetv2-matched-frequency-format-val" / "2").rmdir()
    with pytest.raises(gd.MissingDataError, match=r"format-val.2\b"):
        gd.build_dataset("imagenetv2", tmp_path)


def test_missing_image_folder_is_named(tmp_path):
    mini = make_coop_dataset(tmp_path, "oxford_pets", n_classes=2, per_class=1)
    (mini.folder / "images").rename(mini.folder / "imgs")
    with pytest.raises(gd.MissingDataError, match=r"oxford_pets.images\b"):
        gd.build_dataset("oxford_pets", tmp_path)


def test_split_naming_a_missing_image_fails_at_build_time(tmp_path):
    mini = make_coop_dataset(tmp_path, "caltech101", n_classes=3, per_class=(2, 1, 1))
    split = json.loads((mini.folder / "split_zhou_Caltech101.json").read_text())
    gone = mini.folder / "101_ObjectCategories" / split["test"][1][0]
    gone.unlink()
    with pytest.raises(gd.MissingDataError) as e:
        gd.build_dataset("caltech101", tmp_path)
    assert str(gone) in str(e.value) and "1 image(s)" in str(e.value)
    assert "split_zhou_Caltech101.json" in str(e.value)
    # the check can be turned off (ImageNet-sized data on slow disks); loading then fails by path
    ds = gd.build_dataset("caltech101", tmp_path, check_files=False)
    assert len(ds.test) == 3


def test_malformed_split_files_are_reported(tmp_path):
    mini = make_coop_dataset(tmp_path, "dtd", n_classes=2, per_class=1)
    path = mini.folder / "split_zhou_DescribableTextures.json"
    path.write_text("{not json")
    with pytest.raises(gd.DatasetError, match="not valid JSON"):
        gd.build_dataset("dtd", tmp_path)
    write_split_json(path, {"train": [["banded/banded_0000.jpg", 0]], "val": [], "test": []})
    with pytest.raises(gd.DatasetError, match=r"train\[0\]"):
        gd.build_dataset("dtd", tmp_path)
    write_split_json(path, {"train": [["banded/banded_0000.jpg", 0, "banded"],
                                      ["blotchy/blotchy_1000.jpg", 0, "blotchy"]]})
    with pytest.raises(gd.DatasetError, match="label 0 is named both"):
        gd.build_dataset("dtd", tmp_path)
    write_split_json(path, {"train": [["banded/banded_0000.jpg", 0, "banded"],
                                      ["blotchy/blotchy_1000.jpg", 2, "blotchy"]]})
    with pytest.raises(gd.DatasetError, match=r"missing \[1\]"):
        gd.build_dataset("dtd", tmp_path)


def test_imagenet_inconsistent_folders_and_names(tmp_path):
    mini = make_coop_dataset(tmp_path, "imagenet", n_classes=3, per_class=(1, 0, 1))
    extra = mini.folder / "images" / "val" / "n09999999"
    extra.mkdir()
    with pytest.raises(gd.DatasetError, match="n09999999"):
        gd.build_dataset("imagenet", tmp_path)
    extra.rmdir()
    (mini.folder / "images" / "train" / "n09999999").mkdir()
    (mini.folder / "images" / "val" / "n09999999").mkdir()
    with pytest.raises(gd.DatasetError, match="n09999999.*classnames.txt"):
        gd.build_dataset("imagenet", tmp_path)


def test_fgvc_unknown_variant_is_reported(tmp_path):
    mini = make_coop_dataset(tmp_path, "fgvc_aircraft", n_classes=2, per_class=1)
    (mini.folder / "images_variant_test.txt").write_text("0000200 Concorde\n")
    with pytest.raises(gd.DatasetError, match="'Concorde'"):
        gd.build_dataset("fgvc_aircraft", tmp_path)


# ---- registry --------------------------------------------------------------------------------------

def test_register_dataset_and_reserved_names(tmp_path):
    def toy(root):
        d = gd.Datum(str(tmp_path / "x.png"), 0, "thing")
        return gd.DatasetSplits("toy", [d], [], [d], ["thing"])

    gd.register_dataset("toy_data_test", toy)
    try:
        assert gd.build_dataset("toy-data-test").classnames == ["thing"]
        assert "toy_data_test" in gd.available_datasets()
    finally:
        registry._REGISTRY.pop("toy_data_test")
    with pytest.raises(ValueError, match="reserved|cannot be re-registered"):
        gd.register_dataset("imagenet", toy)
    with pytest.raises(TypeError):
        gd.register_dataset("nothing", 3)


def test_unknown_names_import_the_registered_providers_once(monkeypatch):
    calls = []

    def fake_import(module):
        calls.append(module)
        gd.register_dataset("world_toy_test", lambda root: gd.DatasetSplits("world_toy_test", [], [], [], ["a"]))

    monkeypatch.setattr(providers, "_providers", {})
    monkeypatch.setattr(providers.importlib, "import_module", fake_import)
    try:
        gd.register_provider("toy.provider")
        assert gd.build_dataset("world_toy_test").classnames == ["a"]
        with pytest.raises(gd.DatasetError, match="unknown dataset"):
            gd.build_dataset("still_unknown")
        assert calls == ["toy.provider"]  # imported once, however many names are asked for
    finally:
        registry._REGISTRY.pop("world_toy_test", None)


def test_glad_data_names_no_provider_and_a_broken_provider_is_an_error(monkeypatch):
    monkeypatch.setattr(providers, "_providers", {})
    with pytest.raises(gd.DatasetError, match="unknown dataset"):
        gd.build_dataset("no_such_dataset")  # nothing to import: glad.data imports nothing above it

    def broken(module):
        raise ModuleNotFoundError("No module named 'scipy'", name="scipy")

    monkeypatch.setattr(providers.importlib, "import_module", broken)
    gd.register_provider("needs.scipy")
    with pytest.raises(ModuleNotFoundError, match="scipy"):
        gd.build_dataset("no_such_dataset")


# ---- protocols -------------------------------------------------------------------------------------

def test_protocols_as_data():
    from glad.config import PROTOCOLS as CONFIG_PROTOCOLS

    assert gd.PROTOCOLS is CONFIG_PROTOCOLS  # one table
    xd = gd.PROTOCOLS["cross-dataset"]
    assert xd.source == "imagenet" and xd["source"] == "imagenet"
    assert len(xd.targets) == 10 and "imagenet" not in xd.targets
    assert set(xd.targets) == set(ALL_COOP) - {"imagenet", *TEST_ONLY}
    dg = gd.PROTOCOLS["domain-generalization"]
    assert dg.source == "imagenet" and dg.targets == TEST_ONLY and dg.test_classes == ("all",)
    b2n = gd.PROTOCOLS["base-to-novel"]
    assert b2n.source is None and len(b2n.targets) == 11
    assert b2n.train_classes == "base" and b2n.test_classes == ("base", "novel")
    research = [p for name, p in gd.PROTOCOLS.items() if name != "finetune"]
    assert all(p.shots == 16 and p.seeds == (1, 2, 3) for p in research)
    finetune = gd.PROTOCOLS["finetune"]  # your own data: every class, every training image
    assert finetune.shots == 0 and finetune.train_classes == "all" and finetune.targets == ()
    assert gd.get_protocol("dg") is dg and gd.get_protocol("cross_dataset") is xd


def test_protocol_variants_can_be_registered():
    entry = gd.register_protocol_defaults("cross-dataset", "toy_source", ["toy_a", "toy_b"],
                                          variant="unit_test")
    assert gd.get_protocol("xd", variant="unit_test") is entry
    assert entry.targets == ("toy_a", "toy_b") and entry.shots == 16
    assert gd.PROTOCOLS["cross-dataset"].source == "imagenet"  # the paper's protocol is untouched
    with pytest.raises(ValueError, match="no variant"):
        gd.get_protocol("dg", variant="unit_test")
    with pytest.raises(ValueError, match="cannot be changed"):
        gd.register_protocol_defaults("dg", "x", ["y"], variant="coop")
    with pytest.raises(ValueError, match="unknown protocol"):
        gd.get_protocol("zero-shot")
