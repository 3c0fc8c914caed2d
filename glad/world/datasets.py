"""The built-in datasets: named sets of classes of the world, materialised as PNG + split JSON.

Each dataset draws its pictures from its own seeded streams (`<name>/<split>`), never
from the pretraining stream, so glad-tiny has not seen a single evaluation picture.
Classes are combinations of words; for base-to-novel datasets the classes are ordered
so that every word occurs in both halves (a novel class is a new combination of
words that base classes and pretraining captions used).

On first use a dataset is written once to `<cache>/world/<key>/<name>/` as
`images/<split>/<index>.png` plus `split.json` in CoOp's format
(`{"train": [[relpath, label, classname], ...], ...}`); the folder is built beside
its final place and renamed, so a reader never sees half of it.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from glad.world.cache import (
    atomic_write_json,
    building_dir,
    cache_root,
    generator_hash,
    source_hash,
)
from glad.world.render import render
from glad.world.scenes import Scene, random_group, rng_for
from glad.world.vocab import COLOURS, COUNT_WORDS, SHAPES, TEXTURES, plural

IMAGE_SIZE = 32
SEED = 0
# Train-time random-resized-crop scale that keeps every object in the picture: a count
# is a label here, and CoOp's 0.08-1 crops of a 32 px picture cut objects away (measured:
# LoRA then loses base accuracy on world_scenes; with 0.9-1 it does not).
CROP_SCALE = (0.9, 1.0)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class WorldDataset:
    """A built-in dataset: class names (index = label), a template and a picture maker."""

    name: str
    classnames: tuple[str, ...]
    template: str
    make: Callable[[int, np.random.Generator], Scene] = field(repr=False, compare=False)
    per_class: tuple[int, int, int] = (32, 8, 30)  # train, val, test pictures of each class
    description: str = ""

    def scene(self, split: str, index: int) -> tuple[int, Scene, np.random.Generator]:
        """(label, scene, rng) of picture `index` of `split`; the rng then renders it."""
        rng = rng_for(SEED, f"{self.name}/{split}", index)
        label = index % len(self.classnames)  # balanced classes, interleaved
        return label, self.make(label, rng), rng

    def picture(self, split: str, index: int, size: int = IMAGE_SIZE) -> tuple[int, np.ndarray]:
        """(label, uint8 HxWx3 pixels) of picture `index` of `split`."""
        label, scene, rng = self.scene(split, index)
        return label, render(scene, rng, size)

    def split_size(self, split: str) -> int:
        return self.per_class[SPLITS.index(split)] * len(self.classnames)


def _checkerboard(rows, cols) -> list[tuple]:
    """(row, col) pairs, those with even row+col first: each half holds every row and column word."""
    cells = [(r, c) for r in range(len(rows)) for c in range(len(cols))]
    return [(rows[r], cols[c]) for r, c in cells if (r + c) % 2 == 0] + \
           [(rows[r], cols[c]) for r, c in cells if (r + c) % 2 == 1]


def _texture(rng) -> str:
    return str(rng.choice(TEXTURES))


# colour x shape, one object: "red circle"
_SHAPE_CLASSES = _checkerboard(tuple(COLOURS), SHAPES)


def _shape_maker(style: str):
    def make(label: int, rng) -> Scene:
        colour, shape = _SHAPE_CLASSES[label]
        return Scene((random_group(rng, count=1, colour=colour, shape=shape),), _texture(rng), style)
    return make


# count x shape, any colour: "three stars"
_SCENE_CLASSES = _checkerboard((1, 2, 3, 4), SHAPES)


def _scene_maker(label: int, rng) -> Scene:
    count, shape = _SCENE_CLASSES[label]
    return Scene((random_group(rng, count=count, shape=shape),), _texture(rng))


def _texture_maker(label: int, rng) -> Scene:
    return Scene((), TEXTURES[label])


def _colour_maker(label: int, rng) -> Scene:
    return Scene((random_group(rng, count=1, colour=tuple(COLOURS)[label]),), _texture(rng))


def _count_maker(label: int, rng) -> Scene:
    return Scene((random_group(rng, count=label + 1),), _texture(rng))


_SHAPE_NAMES = tuple(f"{c} {s}" for c, s in _SHAPE_CLASSES)
_SMALL = (16, 4, 30)  # targets of transfer: only the test split is used, the rest is kept small

DATASETS: dict[str, WorldDataset] = {d.name: d for d in (
    WorldDataset("world_shapes", _SHAPE_NAMES, "a photo of a {}.", _shape_maker("photo"),
                 description="one object; class = colour and shape"),
    WorldDataset("world_scenes", tuple(f"{COUNT_WORDS[n]} {plural(s, n)}" for n, s in _SCENE_CLASSES),
                 "a photo of {}.", _scene_maker, description="several objects; class = count and shape"),
    WorldDataset("world_textures", TEXTURES, "a {} texture.", _texture_maker, per_class=(16, 4, 60),
                 description="bare background textures"),
    WorldDataset("world_colours", tuple(COLOURS), "a photo of a {} object.", _colour_maker,
                 per_class=(16, 4, 40), description="one object of any shape; class = colour"),
    WorldDataset("world_counts", tuple(f"{COUNT_WORDS[n]} {'shape' if n == 1 else 'shapes'}" for n in (1, 2, 3, 4)),
                 "a photo of {}.", _count_maker, per_class=(16, 4, 60),
                 description="1-4 alike objects; class = how many"),
    WorldDataset("world_sketch", _SHAPE_NAMES, "a photo of a {}.", _shape_maker("sketch"), per_class=_SMALL,
                 description="world_shapes' classes drawn as coloured outlines on paper"),
    WorldDataset("world_noisy", _SHAPE_NAMES, "a photo of a {}.", _shape_maker("noisy"), per_class=_SMALL,
                 description="world_shapes' classes under heavy noise and clutter"),
    WorldDataset("world_palette", _SHAPE_NAMES, "a photo of a {}.", _shape_maker("palette"), per_class=_SMALL,
                 description="world_shapes' classes in dark shades on light backgrounds"),
)}

# The built-in default of each protocol (what `glad train` runs with no --dataset).
BUILTIN_PROTOCOLS: dict[str, dict] = {
    "base-to-novel": {"datasets": ["world_shapes", "world_scenes"]},
    "cross-dataset": {"source": "world_shapes", "targets": ["world_textures", "world_colours", "world_counts"]},
    "domain-generalization": {"source": "world_shapes", "targets": ["world_sketch", "world_noisy", "world_palette"]},
    "few-shot": {"datasets": ["world_shapes", "world_scenes"]},
}


def dataset_key() -> str:
    """Cache key of the materialised datasets: the generator and the dataset definitions."""
    return source_hash(("datasets",), extra={"generator": generator_hash(), "size": IMAGE_SIZE, "seed": SEED})


def dataset_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "world" / dataset_key() / name


def _get(name: str) -> WorldDataset:
    if name not in DATASETS:
        raise KeyError(f"unknown built-in dataset {name!r}; the world has {', '.join(DATASETS)}")
    return DATASETS[name]


def materialize(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of built-in dataset `name`, written on first use; returns its path."""
    ds = _get(name)
    final = dataset_dir(name, cache_dir)
    if (final / "split.json").is_file():
        return final
    with building_dir(final, marker="split.json") as tmp:
        split = {}
        for s in SPLITS:
            (tmp / "images" / s).mkdir(parents=True)
            items = []
            for i in range(ds.split_size(s)):
                label, pixels = ds.picture(s, i)
                rel = f"images/{s}/{i:05d}.png"
                buf = io.BytesIO()
                Image.fromarray(pixels, "RGB").save(buf, format="PNG")
                (tmp / rel).write_bytes(buf.getvalue())
                items.append([rel, label, ds.classnames[label]])
            split[s] = items
        atomic_write_json(tmp / "meta.json", {
            "name": name, "classnames": list(ds.classnames), "template": ds.template,
            "description": ds.description, "image_size": IMAGE_SIZE, "generator": generator_hash(),
            "key": dataset_key()})
        atomic_write_json(tmp / "split.json", split)  # written last: its presence marks a complete folder
    return final


def build_world_dataset(name: str, root=None, *, cache_dir: str | os.PathLike | None = None):
    """glad.data builder of a built-in dataset (`root` is ignored: the world needs no data folder)."""
    from glad.data import DatasetSplits, Datum

    ds = _get(name)
    folder = materialize(name, cache_dir)
    split = json.loads((folder / "split.json").read_text())

    def items(s):
        return [Datum(str(folder / rel), int(label), classname) for rel, label, classname in split[s]]

    return DatasetSplits(name=name, train=items("train"), val=items("val"), test=items("test"),
                         classnames=list(ds.classnames), template=ds.template, folder=str(folder),
                         info={"builtin": True, "description": ds.description, "image_size": IMAGE_SIZE,
                               "crop_scale": list(CROP_SCALE)})


def register_all() -> None:
    """Register every built-in dataset and protocol with glad.data."""
    from glad import data

    for name in DATASETS:
        data.register_dataset(name, lambda root=None, _n=name: build_world_dataset(_n, root))
    register = getattr(data, "register_protocol_defaults", None)
    if register is not None:
        for protocol, spec in BUILTIN_PROTOCOLS.items():
            if "datasets" in spec:
                register(protocol, None, spec["datasets"], variant="builtin")
            else:
                register(protocol, spec["source"], spec["targets"], variant="builtin")
