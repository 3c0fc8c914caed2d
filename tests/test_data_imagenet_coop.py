"""ImageNet as CoOp reads it: class folders sorted, files in the file system's order (Dassl's
`listdir_nohidden`, unsorted), CoOp's own pickled caches when present, and nothing but Dassl's
Datum records ever unpickled.

The reference below follows CoOp's ImageNet reader and Dassl's sampler step by step; the file
system is given a fixed unsorted order so that sorting anywhere would show.
"""

from __future__ import annotations

import math
import os
import pickle
import sys
import types
import zlib

import pytest
from data_fixtures import dassl_reference_draw, make_coop_dataset

import glad.data as gd
from glad.data import DatasetError, Datum

# every test with its own GLAD_CACHE (the few-shot draws are cached there)
pytestmark = pytest.mark.usefixtures("cache")


class _Listing:
    """os.scandir's result, in a given order (a context manager and an iterator)."""

    def __init__(self, entries):
        self._entries = entries

    def __enter__(self):
        return iter(self._entries)

    def __exit__(self, *exc):
        return False

    def __iter__(self):
        return iter(self._entries)


@pytest.fixture
def unsorted_fs(monkeypatch):
    """A file system whose directory order is a fixed hash order, not the sorted one."""
    real_scandir, real_listdir = os.scandir, os.listdir

    def key(name):
        return zlib.crc32(name.encode())

    def scandir(path="."):
        with real_scandir(path) as it:
            entries = sorted(it, key=lambda e: key(e.name))
        return _Listing(entries)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", lambda path=".": sorted(real_listdir(path), key=key))


def coop_imagenet_train(folder) -> tuple[list[Datum], list[str]]:
    """CoOp's ImageNet.read_data for the train split, with Dassl's listdir_nohidden."""
    names = {}
    for line in open(os.path.join(folder, "classnames.txt"), encoding="utf-8"):
        parts = line.strip().split(" ")
        names[parts[0]] = " ".join(parts[1:])
    split_dir = os.path.join(folder, "images", "train")
    folders = sorted(f.name for f in os.scandir(split_dir) if f.is_dir())
    items = []
    for label, wnid in enumerate(folders):
        imnames = [f for f in os.listdir(os.path.join(split_dir, wnid)) if not f.startswith(".")]
        items += [Datum(os.path.join(split_dir, wnid, n), label, names[wnid]) for n in imnames]
    return items, [names[w] for w in folders]


def coop_subsample(items: list[Datum], subsample: str) -> list[Datum]:
    """CoOp's OxfordPets.subsample_classes on one list."""
    labels = sorted({d.label for d in items})
    m = math.ceil(len(labels) / 2)
    selected = labels[:m] if subsample == "base" else labels[m:]
    relabel = {y: i for i, y in enumerate(selected)}
    return [Datum(d.impath, relabel[d.label], d.classname) for d in items if d.label in relabel]


def test_draws_equal_coops_on_an_unsorted_file_system(tmp_path, unsorted_fs):
    mini = make_coop_dataset(tmp_path, "imagenet", n_classes=5, per_class=(20, 0, 2))
    reference, classnames = coop_imagenet_train(str(mini.folder))
    listed = [os.path.basename(d.impath) for d in reference if d.label == 0]
    assert listed != sorted(listed)  # the order really is not the sorted one
    ds = gd.build_dataset("imagenet", tmp_path)
    assert ds.train == reference and ds.classnames == classnames
    for shots in (1, 4, 16):
        for seed in (1, 2, 3):
            want = dassl_reference_draw(reference, [], shots, seed)[0]
            got = gd.fewshot(ds, shots, seed)
            assert got.train == want, (shots, seed)
            for subset in ("base", "new"):
                assert gd.subsample_classes(got, subset).train == coop_subsample(want, subset)
    # the cached draw (JSON) gives the same on the next run
    assert gd.fewshot(gd.build_dataset("imagenet", tmp_path), 4, 2).train == dassl_reference_draw(
        reference, [], 4, 2)[0]


def test_variants_list_files_in_file_system_order(tmp_path, unsorted_fs):
    for name in ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"):
        make_coop_dataset(tmp_path, name, n_classes=4, per_class=(0, 0, 6))
        ds = gd.build_dataset(name, tmp_path)
        first = os.path.dirname(ds.test[0].impath)
        files = [os.path.basename(d.impath) for d in ds.test if os.path.dirname(d.impath) == first]
        assert files == [f for f in os.listdir(first) if not f.startswith(".")], name


# ------------------------------------------------------------------ CoOp's pickles


@pytest.fixture
def dassl_datum(monkeypatch):
    """Dassl's Datum class under its real module name, as CoOp pickled it."""
    module = types.ModuleType("dassl.data.datasets.base_dataset")

    class Datum:  # the fields Dassl's record has
        def __init__(self, impath="", label=0, domain=0, classname=""):
            self._impath, self._label, self._domain, self._classname = impath, label, domain, classname

    Datum.__module__ = module.__name__
    Datum.__qualname__ = "Datum"
    module.Datum = Datum
    for name in ("dassl", "dassl.data", "dassl.data.datasets"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return Datum


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_coop_pickles_are_used(tmp_path, dassl_datum, protocol):
    mini = make_coop_dataset(tmp_path, "imagenet", n_classes=4, per_class=(6, 0, 2))
    listed = gd.build_dataset("imagenet", tmp_path)
    old_root = "/home/someone/coop-data/imagenet/images"  # the machine CoOp ran on

    def dassl(items):
        return [dassl_datum(d.impath.replace(str(mini.folder / "images"), old_root), d.label, 0, d.classname)
                for d in items]

    frozen_train = list(reversed(listed.train))  # CoOp's order, whatever it was there
    with open(mini.folder / "preprocessed.pkl", "wb") as f:
        pickle.dump({"train": dassl(frozen_train), "test": dassl(listed.test)}, f, protocol=protocol)
    drawn = [frozen_train[i] for i in (5, 0, 11, 7, 20, 13, 23, 18)]  # 2 a class, CoOp's picks
    (mini.folder / "split_fewshot").mkdir()
    with open(mini.folder / "split_fewshot" / "shot_2-seed_1.pkl", "wb") as f:
        pickle.dump({"train": dassl(drawn)}, f, protocol=protocol)
    ds = gd.build_dataset("imagenet", tmp_path)
    assert ds.train == frozen_train and ds.test == listed.test  # relocated to this machine's folder
    assert ds.info["listing"] == "coop-pickle"
    got = gd.fewshot(ds, 2, 1)
    assert got.train == drawn and got.info["draw"] == "coop-pickle"
    # a draw CoOp has not made is drawn as Dassl would, over CoOp's frozen list
    assert gd.fewshot(ds, 2, 2).train == dassl_reference_draw(frozen_train, [], 2, 2)[0]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("payload", [
    {"train": [_Evil()]},
    {"train": [], "test": [__import__("collections").OrderedDict()]},
])
def test_a_pickle_holding_anything_but_datum_records_is_refused(tmp_path, monkeypatch, payload):
    monkeypatch.chdir(tmp_path)
    mini = make_coop_dataset(tmp_path, "imagenet", n_classes=2, per_class=(2, 0, 1))
    with open(mini.folder / "preprocessed.pkl", "wb") as f:
        pickle.dump(payload, f)
    with pytest.raises(DatasetError, match="not only Dassl Datum records|does not unpickle") as err:
        gd.build_dataset("imagenet", tmp_path)
    assert "preprocessed.pkl" in str(err.value)
    assert not (tmp_path / "pwned").exists()  # nothing ran
