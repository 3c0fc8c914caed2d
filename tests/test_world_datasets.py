"""Built-in datasets: materialised once as PNG + CoOp split JSON, reused, rebuilt when the world changes."""

import json

import numpy as np
import pytest
from PIL import Image

from glad.world import datasets as wd


def test_materialize_writes_coop_split_and_matching_pngs(cache):
    folder = wd.materialize("world_counts")
    assert folder == cache / "world" / wd.dataset_key() / "world_counts"
    ds = wd.DATASETS["world_counts"]
    split = json.loads((folder / "split.json").read_text())
    assert set(split) == {"train", "val", "test"}
    for s in wd.SPLITS:
        assert len(split[s]) == ds.split_size(s)
        labels = sorted({label for _, label, _ in split[s]})
        assert labels == list(range(len(ds.classnames)))  # contiguous, 0-based, every class present
        for _rel, label, name in split[s]:
            assert name == ds.classnames[label]
    # the files hold exactly the generator's pixels (PNG is lossless)
    for i in (0, 7, len(split["test"]) - 1):
        rel, label, _ = split["test"][i]
        want_label, want = ds.picture("test", i)
        assert label == want_label
        np.testing.assert_array_equal(np.asarray(Image.open(folder / rel).convert("RGB")), want)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["classnames"] == list(ds.classnames) and meta["generator"]
    assert not [p for p in folder.parent.iterdir() if p.name.endswith(".building")]


def test_second_build_reuses_the_folder(cache, monkeypatch):
    wd.materialize("world_textures")

    def no_drawing(*a, **k):
        raise AssertionError("a materialised dataset must not be drawn again")

    monkeypatch.setattr(wd, "render", no_drawing)
    wd.materialize("world_textures")


def test_a_changed_world_gets_a_new_folder(cache, monkeypatch):
    old = wd.materialize("world_textures")
    monkeypatch.setattr(wd, "generator_hash", lambda: "another-generator")
    new = wd.dataset_dir("world_textures")
    assert new != old and not new.exists()
    assert wd.materialize("world_textures") == new and (new / "split.json").is_file()


def test_an_unfinished_folder_is_not_read(cache):
    # a crash mid-build leaves a folder without split.json: it is rebuilt, not trusted
    target = wd.dataset_dir("world_textures")
    (target / "images").mkdir(parents=True)
    assert wd.materialize("world_textures") == target
    assert (target / "split.json").is_file()


def test_build_dataset_knows_every_builtin_name(cache):
    from glad.data import build_dataset, fewshot, get_protocol, subsample_classes

    ds = build_dataset("world_textures", root="/ignored/for/builtins")
    assert ds.name == "world_textures" and ds.classnames == list(wd.DATASETS["world_textures"].classnames)
    assert ds.prompts()[1] == "a striped texture."
    assert ds.info["builtin"] and ds.info["crop_scale"] == [0.9, 1.0]
    assert all(d.impath.startswith(str(cache)) for d in ds.test[:5])
    few = fewshot(ds, shots=4, seed=1)
    assert len(few.train) == 4 * len(ds.classnames)
    base = subsample_classes(ds, "base")
    assert base.classnames == ds.classnames[:3]

    proto = get_protocol("domain-generalization", "builtin")
    assert proto.source == wd.BUILTIN_PROTOCOLS["domain-generalization"]["source"]
    assert list(proto.targets) == wd.BUILTIN_PROTOCOLS["domain-generalization"]["targets"]
    assert list(get_protocol("base-to-novel", "builtin").targets) == \
        wd.BUILTIN_PROTOCOLS["base-to-novel"]["datasets"]


def test_unknown_name_lists_the_world(cache):
    with pytest.raises(KeyError, match="world_shapes"):
        wd.materialize("world_unicorns")
