"""Miniature replicas of the CoOp data layouts, built in a temporary folder for tests.

    from data_fixtures import make_coop_dataset, make_imagefolder

    mini = make_coop_dataset(tmp_path, "oxford_pets", n_classes=5, per_class=(4, 2, 2))
    ds = glad.data.build_dataset("oxford_pets", mini.root)
    folder = make_imagefolder(tmp_path / "mine", n_classes=3, per_class=6)

Images are 8x8, one colour per class plus a little noise, written in the format the real
layout uses (.jpg, .JPEG, .jpeg, .png). Split files and txt files have the documented
formats. `make_coop_dataset` returns a `MiniDataset` with the class names (label order)
and the item counts a correct reader must find.
"""

from __future__ import annotations

import io
import json
import os
import random
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

# The real names of each dataset's first classes (label order); later classes are generated.
_NAMES = {
    "caltech101": ["accordion", "airplane", "anchor", "ant", "barrel", "bass", "beaver"],
    "oxford_pets": ["abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound",
                    "beagle", "bengal", "birman", "bombay"],
    "stanford_cars": ["2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Acura TL Sedan"],
    "oxford_flowers": ["pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea"],
    "food101": ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare"],
    "fgvc_aircraft": ["707-320", "727-200", "737-200", "A300B4", "Cessna 172", "DHC-1"],
    "sun397": ["abbey", "airplane_cabin", "airport_terminal", "alley", "outdoor apartment_building"],
    "dtd": ["banded", "blotchy", "braided", "bubbly", "bumpy", "chequered"],
    "eurosat": ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road",
                "Industrial Buildings", "Pasture Land", "Permanent Crop Land", "Residential Buildings",
                "River", "Sea or Lake"],
    "ucf101": ["Apply_Eye_Makeup", "Apply_Lipstick", "Archery", "Baby_Crawling", "Balance_Beam"],
    "imagenet": ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead shark",
                 "electric ray", "stingray", "rooster", "hen", "ostrich"],
}
_EUROSAT_FOLDERS = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                    "PermanentCrop", "Residential", "River", "SeaLake"]

# name -> (dataset folder, image folder, split file); None: not a split-file dataset.
SPLIT_LAYOUTS = {
    "caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    "oxford_pets": ("oxford_pets", "images", "split_zhou_OxfordPets.json"),
    "stanford_cars": ("stanford_cars", "", "split_zhou_StanfordCars.json"),
    "oxford_flowers": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    "food101": ("food-101", "images", "split_zhou_Food101.json"),
    "sun397": ("sun397", "SUN397", "split_zhou_SUN397.json"),
    "dtd": ("dtd", "images", "split_zhou_DescribableTextures.json"),
    "eurosat": ("eurosat", "2750", "split_zhou_EuroSAT.json"),
    "ucf101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
}
FOLDERS = {**{k: v[0] for k, v in SPLIT_LAYOUTS.items()}, "imagenet": "imagenet",
           "fgvc_aircraft": "fgvc_aircraft", "imagenetv2": "imagenetv2",
           "imagenet_sketch": "imagenet-sketch", "imagenet_a": "imagenet-adversarial",
           "imagenet_r": "imagenet-rendition"}
ALL_COOP = tuple(FOLDERS)

PerClass = int | tuple[int, int, int] | Callable[[int], tuple[int, int, int]]


@dataclass
class MiniDataset:
    """What was written: the data root, the dataset folder, and what a reader must find."""

    name: str
    root: Path
    folder: Path
    classnames: list[str]
    counts: dict[str, int] = field(default_factory=dict)  # items per split ("train", "val", "test")


_BYTES: dict[tuple, bytes] = {}


def image_bytes(label: int, fmt: str = "JPEG", size: int = 8, variant: int = 0) -> bytes:
    """Encoded bytes of a tiny image: one colour per label, `variant` varies the noise."""
    key = (label, fmt, size, variant % 4)
    if key not in _BYTES:
        rng = random.Random(zlib.crc32(repr(key).encode()))
        base = ((label * 67) % 256, (label * 131 + 40) % 256, (label * 29 + 90) % 256)
        im = Image.new("RGB", (size, size), base)
        px = im.load()
        for x in range(size):
            for y in range(size):
                px[x, y] = tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in base)
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        _BYTES[key] = buf.getvalue()
    return _BYTES[key]


def write_image(path, label: int = 0, variant: int = 0, size: int = 8) -> Path:
    """Write a tiny image at `path`, its format taken from the extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    fmt = {".png": "PNG", ".bmp": "BMP"}.get(ext, "JPEG")
    path.write_bytes(image_bytes(label, fmt, size, variant))
    return path


def corrupt_image(path) -> Path:
    """Make an existing image undecodable: keep its header, cut the rest."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: max(8, len(data) // 3)])
    return path


def class_names(name: str, n: int) -> list[str]:
    """The first `n` class names of a dataset: real ones first, then generated."""
    known = _NAMES.get("imagenet" if name.startswith("imagenet") else name, [])
    return [known[i] if i < len(known) else f"{name}_class_{i:03d}" for i in range(n)]


def wnid(i: int) -> str:
    return f"n{1440764 + 1000 * i:08d}"


def _counts(per_class: PerClass, label: int) -> tuple[int, int, int]:
    if callable(per_class):
        return tuple(per_class(label))
    if isinstance(per_class, int):
        return (per_class, per_class, per_class)
    return tuple(per_class)


def _relpath(name: str, cname: str, label: int, k: int, split: str) -> str:
    """A path in the style of the real dataset, relative to its image root."""
    n = label * 1000 + k
    slug = cname.replace(" ", "_").replace("/", "_")
    if name == "caltech101":
        return f"{slug}/image_{n:04d}.jpg"
    if name == "oxford_pets":
        return f"{slug.capitalize()}_{n}.jpg"
    if name == "stanford_cars":
        return f"cars_{'test' if split == 'test' else 'train'}/{label:03d}{k:05d}.jpg"
    if name == "oxford_flowers":
        return f"image_{label:03d}{k:05d}.jpg"
    if name == "food101":
        return f"{slug}/{n}.jpg"
    if name == "sun397":
        path = "/".join(reversed(cname.split(" ")))
        return f"{path[0]}/{path}/sun_{n:06d}.jpg"
    if name == "dtd":
        return f"{slug}/{slug}_{n:04d}.jpg"
    if name == "eurosat":
        folder = _EUROSAT_FOLDERS[label] if label < len(_EUROSAT_FOLDERS) else slug
        return f"{folder}/{folder}_{n}.jpg"
    if name == "ucf101":
        return f"{slug}/v_{slug}_g{k:02d}_c01.jpg"
    raise KeyError(name)


def write_split_json(path, splits: dict[str, list], indent: int | None = None) -> Path:
    """Write `{"train"|"val"|"test": [[path, label, classname], ...]}`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: [list(x) for x in v] for k, v in splits.items()}, indent=indent))
    return path


def _shuffled(rows: list, seed: int | None) -> list:
    if seed is not None:
        random.Random(seed).shuffle(rows)
    return rows


def make_coop_dataset(root, name: str, n_classes: int = 4, per_class: PerClass = (6, 2, 3), *,
                      classnames: list[str] | None = None, shuffle_seed: int | None = None,
                      n_present: int | None = None) -> MiniDataset:
    """Write a miniature `name` (a CoOp CLI name) under `root` in its exact CoOp layout.

    `per_class` is the number of images a class in (train, val, test), an int for all
    three, or a function label -> tuple for uneven classes. Test-only datasets (ImageNet
    variants) use the test count; ImageNet uses train and test (its val is the test set).
    `shuffle_seed` shuffles the order of the items in split files, so that classes are
    first seen out of label order. `n_present` (imagenet_a / imagenet_r): how many of the
    `n_classes` names in classnames.txt get an image folder (every other one by default).
    """
    root = Path(root)
    folder = root / FOLDERS[name]
    folder.mkdir(parents=True, exist_ok=True)
    names = classnames or class_names(name, n_classes)
    counts = {"train": 0, "val": 0, "test": 0}
    if name in SPLIT_LAYOUTS:
        _, image_dir, split_file = SPLIT_LAYOUTS[name]
        image_root = folder / image_dir if image_dir else folder
        splits = {"train": [], "val": [], "test": []}
        for label, cname in enumerate(names):
            for split, n in zip(("train", "val", "test"), _counts(per_class, label), strict=True):
                for k in range(n):
                    idx = {"train": 0, "val": 100, "test": 200}[split] + k
                    rel = _relpath(name, cname, label, idx, split)
                    write_image(image_root / rel, label, k)
                    splits[split].append([rel, label, cname])
        for split in splits:
            counts[split] = len(splits[split])
            _shuffled(splits[split], None if shuffle_seed is None else shuffle_seed + len(split))
        write_split_json(folder / split_file, splits)
        return MiniDataset(name, root, folder, names, counts)
    if name == "fgvc_aircraft":
        (folder / "variants.txt").write_text("".join(f"{c}\n" for c in names))
        lines = {"train": [], "val": [], "test": []}
        for label, cname in enumerate(names):
            for split, n in zip(("train", "val", "test"), _counts(per_class, label), strict=True):
                for k in range(n):
                    image_id = f"{label * 1000 + {'train': 0, 'val': 100, 'test': 200}[split] + k:07d}"
                    write_image(folder / "images" / f"{image_id}.jpg", label, k)
                    lines[split].append(f"{image_id} {cname}\n")
        for split, rows in lines.items():
            counts[split] = len(rows)
            _shuffled(rows, None if shuffle_seed is None else shuffle_seed + len(split))
            (folder / f"images_variant_{split}.txt").write_text("".join(rows))
        return MiniDataset(name, root, folder, names, counts)
    # ImageNet and its variants: classnames.txt lines "<wnid> <name words>".
    wnids = [wnid(i) for i in range(len(names))]
    order = _shuffled(list(range(len(names))), shuffle_seed)  # file order need not be sorted
    (folder / "classnames.txt").write_text("".join(f"{wnids[i]} {names[i]}\n" for i in order))
    if name == "imagenet":
        for label, w in enumerate(wnids):
            n_train, _, n_test = _counts(per_class, label)
            for k in range(n_train):
                write_image(folder / "images" / "train" / w / f"{w}_{k}.JPEG", label, k)
            for k in range(n_test):
                write_image(folder / "images" / "val" / w / f"ILSVRC2012_val_{label * 1000 + k:08d}.JPEG",
                            label, k)
            counts["train"] += n_train
            counts["test"] += n_test
        counts["val"] = counts["test"]
        return MiniDataset(name, root, folder, names, counts)
    if name == "imagenetv2":
        for label in range(len(names)):
            for k in range(_counts(per_class, label)[2]):
                write_image(folder / "imagenetv2-matched-frequency-format-val" / str(label) / f"{k:040x}.jpeg",
                            label, k)
                counts["test"] += 1
        return MiniDataset(name, root, folder, [names[i] for i in order], counts)  # folder i = line i
    image_dir = {"imagenet_sketch": "images", "imagenet_a": "imagenet-a", "imagenet_r": "imagenet-r"}[name]
    present = list(range(len(names)))
    if name in ("imagenet_a", "imagenet_r"):
        present = present[::2] if n_present is None else present[:n_present]
        (folder / image_dir).mkdir(parents=True, exist_ok=True)
        (folder / image_dir / "README.txt").write_text("not a class\n")
    for new_label, label in enumerate(present):
        for k in range(_counts(per_class, label)[2]):
            write_image(folder / image_dir / wnids[label] / f"{name}_{k}.JPEG", new_label, k)
            counts["test"] += 1
    return MiniDataset(name, root, folder, [names[i] for i in present], counts)


def make_all_coop(root, n_classes: int = 4, per_class: PerClass = (6, 2, 3)) -> dict[str, MiniDataset]:
    """Every one of the 15 CoOp datasets under one root (for cross-dataset and DG runs)."""
    return {name: make_coop_dataset(root, name, n_classes, per_class) for name in ALL_COOP}


def make_imagefolder(root, n_classes: int = 3, per_class: int = 6, *, splits: tuple[str, ...] | None = None,
                     ext: str = ".png", classnames: list[str] | None = None) -> Path:
    """A folder-per-class image folder at `root`; with `splits`, a level per split name
    (e.g. ("train", "test")) each holding every class with `per_class` images."""
    root = Path(root)
    names = classnames or [f"class_{i}" for i in range(n_classes)]
    levels = [root / s for s in splits] if splits else [root]
    for level in levels:
        for label, cname in enumerate(names):
            for k in range(per_class):
                write_image(level / cname / f"img_{k:03d}{ext}", label, k)
    return root


def dassl_reference_draw(train: list, val: list, shots: int, seed: int, repeat: bool = False):
    """A straightforward re-implementation of CoOp's call of Dassl's few-shot sampler.

    Global `random` seeded once; train then val (min(shots, 4)); per label in first-seen
    order, `random.sample` of `shots`, a smaller class kept whole (or `random.choices`).
    """
    state = random.getstate()
    try:
        random.seed(seed)
        out = []
        for source, k in ((train, shots), (val, min(shots, 4))):
            tracker = defaultdict(list)
            for item in source:
                tracker[item.label].append(item)
            picked = []
            for items in tracker.values():
                if len(items) >= k:
                    picked.extend(random.sample(items, k))
                elif repeat:
                    picked.extend(random.choices(items, k=k))
                else:
                    picked.extend(items)
            out.append(picked)
        return out[0], out[1]
    finally:
        random.setstate(state)


def make_env_cache(monkeypatch, tmp_path) -> Path:
    """Point GLAD_CACHE at a temporary folder (so tests never write to the home cache)."""
    cache = Path(tmp_path) / "glad-cache"
    monkeypatch.setenv("GLAD_CACHE", os.fspath(cache))
    return cache
