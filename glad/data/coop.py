"""Builders for the 15 CoOp datasets, reading the exact layouts of CoOp's DATASETS.md.

Every builder takes the data root (the folder holding `imagenet/`, `oxford_pets/`, ...)
and returns a `DatasetSplits`. What is read, and how, follows CoOp's dataset classes:

* split-file datasets read `split_zhou_<Name>.json` with paths relative to the image
  folder (StanfordCars: relative to the dataset folder);
* FGVC Aircraft reads `variants.txt` (label = line index) and `images_variant_*.txt`;
* ImageNet lists `images/train/<wnid>/` and `images/val/<wnid>/` (label = index of the
  wnid in sorted folder order; names from `classnames.txt`); val is the test set;
* ImageNet-V2: folder `i` is line `i` of `classnames.txt`; Sketch, -A and -R list their
  own wnid folders in sorted order, so -A/-R have the 200 classes present.

Files inside the ImageNet-family class folders are taken in the file system's order, as
CoOp takes them (Dassl's `listdir_nohidden`, unsorted): the few-shot draws then equal
CoOp's on the same files on the same kind of file system. Where CoOp's own caches are
present (`imagenet/preprocessed.pkl`, `imagenet/split_fewshot/shot_K-seed_S.pkl`), they
are read instead (`glad.data.coop_pickle`) and the draws equal CoOp's on any machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .coop_pickle import read_coop_pickle
from .readers import (
    check_files_exist,
    classnames_from_items,
    files_in,
    read_lines,
    read_split_json,
    read_wnid_names,
    require_dir,
    require_file,
    subfolders,
    where_to_get,
)
from .templates import template_for
from .types import DatasetError, DatasetSplits, Datum, MissingDataError


@dataclass(frozen=True)
class CoopSpec:
    """Where one dataset lives under the data root, and how many classes it has in full."""

    name: str
    folder: str
    section: str  # heading in CoOp's DATASETS.md
    num_classes: int
    image_dir: str | None = None  # relative to the dataset folder
    split_file: str | None = None


SPECS: dict[str, CoopSpec] = {s.name: s for s in (
    CoopSpec("imagenet", "imagenet", "ImageNet", 1000, "images"),
    CoopSpec("caltech101", "caltech-101", "Caltech101", 100, "101_ObjectCategories",
             "split_zhou_Caltech101.json"),
    CoopSpec("oxford_pets", "oxford_pets", "OxfordPets", 37, "images", "split_zhou_OxfordPets.json"),
    CoopSpec("stanford_cars", "stanford_cars", "StanfordCars", 196, None, "split_zhou_StanfordCars.json"),
    CoopSpec("oxford_flowers", "oxford_flowers", "Flowers102", 102, "jpg", "split_zhou_OxfordFlowers.json"),
    CoopSpec("food101", "food-101", "Food101", 101, "images", "split_zhou_Food101.json"),
    CoopSpec("fgvc_aircraft", "fgvc_aircraft", "FGVCAircraft", 100, "images"),
    CoopSpec("sun397", "sun397", "SUN397", 397, "SUN397", "split_zhou_SUN397.json"),
    CoopSpec("dtd", "dtd", "DTD", 47, "images", "split_zhou_DescribableTextures.json"),
    CoopSpec("eurosat", "eurosat", "EuroSAT", 10, "2750", "split_zhou_EuroSAT.json"),
    CoopSpec("ucf101", "ucf101", "UCF101", 101, "UCF-101-midframes", "split_zhou_UCF101.json"),
    CoopSpec("imagenetv2", "imagenetv2", "ImageNetV2", 1000, "imagenetv2-matched-frequency-format-val"),
    CoopSpec("imagenet_sketch", "imagenet-sketch", "ImageNet-Sketch", 1000, "images"),
    CoopSpec("imagenet_a", "imagenet-adversarial", "ImageNet-A", 200, "imagenet-a"),
    CoopSpec("imagenet_r", "imagenet-rendition", "ImageNet-R", 200, "imagenet-r"),
)}

# StanfordCars' split paths start with these folders, relative to the dataset folder.
_CARS_IMAGE_DIRS = ("cars_train", "cars_test")


def dataset_folder(spec: CoopSpec, root: str | None) -> str:
    """`<root>/<folder>`, or an error naming both when either is missing."""
    if root is None or str(root) == "":
        raise MissingDataError(
            f"{spec.name}: no data root given; pass --data-root (or set GLAD_DATA) to the folder "
            f"that holds {spec.folder}/.")
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    require_dir(root, f"{spec.name}: data root")
    return require_dir(os.path.join(root, spec.folder), f"{spec.name}: dataset folder", spec.section)


def _splits(spec, folder, train, val, test, classnames, *, val_is_test=False) -> DatasetSplits:
    return DatasetSplits(name=spec.name, train=train, val=val, test=test, classnames=classnames,
                         template=template_for(spec.name), folder=folder, val_is_test=val_is_test)


def build_split_file(spec: CoopSpec, root: str | None, *, check_files: bool = True) -> DatasetSplits:
    """Caltech101, Pets, Cars, Flowers, Food101, SUN397, DTD, EuroSAT, UCF101."""
    folder = dataset_folder(spec, root)
    split_path = require_file(os.path.join(folder, spec.split_file), f"{spec.name}: split file",
                              spec.section)
    if spec.image_dir is None:  # StanfordCars: split paths are relative to the dataset folder
        image_root = folder
        for sub in _CARS_IMAGE_DIRS:
            require_dir(os.path.join(folder, sub), f"{spec.name}: image folder", spec.section)
    else:
        image_root = require_dir(os.path.join(folder, spec.image_dir), f"{spec.name}: image folder",
                                 spec.section)
    splits = read_split_json(split_path, image_root, spec.name)
    everything = splits["train"] + splits["val"] + splits["test"]
    classnames = classnames_from_items(everything, f"{spec.name}: {split_path}")
    if check_files:
        check_files_exist(everything, f"{spec.name}: split file {split_path}")
    return _splits(spec, folder, splits["train"], splits["val"], splits["test"], classnames)


def build_fgvc_aircraft(spec: CoopSpec, root: str | None, *, check_files: bool = True) -> DatasetSplits:
    folder = dataset_folder(spec, root)
    image_dir = require_dir(os.path.join(folder, spec.image_dir), f"{spec.name}: image folder", spec.section)
    variants_path = os.path.join(folder, "variants.txt")
    classnames = read_lines(variants_path, f"{spec.name}: class list", spec.section)
    label_of = {c: i for i, c in enumerate(classnames)}
    out = {}
    for split in ("train", "val", "test"):
        path = os.path.join(folder, f"images_variant_{split}.txt")
        items = []
        for n, line in enumerate(read_lines(path, f"{spec.name}: split file", spec.section), 1):
            image_id, _, variant = line.partition(" ")
            if variant not in label_of:
                raise DatasetError(f"{spec.name}: {path} line {n} names variant {variant!r}, which is "
                                   f"not in {variants_path}; the two files come from different "
                                   f"releases, re-extract fgvc-aircraft-2013b/data.")
            items.append(Datum(os.path.join(image_dir, image_id + ".jpg"), label_of[variant], variant))
        out[split] = items
        if check_files:
            check_files_exist(items, f"{spec.name}: split file {path}")
    return _splits(spec, folder, out["train"], out["val"], out["test"], classnames)


def _scan_class_folders(spec, split_dir, folders, names, names_path) -> list[Datum]:
    items = []
    for label, wnid in enumerate(folders):
        if wnid not in names:
            raise DatasetError(f"{spec.name}: folder {os.path.join(split_dir, wnid)} has no line in "
                               f"{names_path}; use the classnames.txt that CoOp provides "
                               f"(the same file for ImageNet and its variants).")
        sub = os.path.join(split_dir, wnid)
        items.extend(Datum(os.path.join(sub, f), label, names[wnid]) for f in files_in(sub, sort=False))
    return items


def build_imagenet(spec: CoopSpec, root: str | None, *, check_files: bool = True) -> DatasetSplits:
    folder = dataset_folder(spec, root)
    image_dir = os.path.join(folder, spec.image_dir)
    info = {"coop_fewshot_dir": os.path.join(folder, "split_fewshot"), "image_dir": image_dir}
    frozen = os.path.join(folder, "preprocessed.pkl")
    if os.path.isfile(frozen):  # CoOp's frozen lists: its exact items and order
        lists = read_coop_pickle(frozen, image_dir)
        train, test = lists["train"], lists.get("test", [])
        if check_files:
            check_files_exist(train + test, f"{spec.name}: {frozen}")
        classnames = classnames_from_items(train + test, f"{spec.name}: {frozen}")
        splits = _splits(spec, folder, train, test, test, classnames, val_is_test=True)
        return splits.replace(info={**splits.info, **info, "listing": "coop-pickle"})
    names_path = os.path.join(folder, "classnames.txt")
    names = read_wnid_names(names_path, f"{spec.name}: class names", spec.section)
    train_dir = require_dir(os.path.join(folder, spec.image_dir, "train"), f"{spec.name}: train images",
                            spec.section)
    val_dir = require_dir(os.path.join(folder, spec.image_dir, "val"), f"{spec.name}: val images",
                          spec.section)
    wnids = subfolders(train_dir)
    val_wnids = subfolders(val_dir)
    if wnids != val_wnids:
        # CoOp numbers each split's folders on its own; they must agree or labels would shift.
        only = sorted(set(wnids) ^ set(val_wnids))[:5]
        raise DatasetError(f"{spec.name}: {train_dir} and {val_dir} hold different class folders "
                           f"(e.g. {only}); the validation images must be sorted into the same "
                           f"<wnid> folders as the training images.")
    train = _scan_class_folders(spec, train_dir, wnids, names, names_path)
    test = _scan_class_folders(spec, val_dir, wnids, names, names_path)
    classnames = [names[w] for w in wnids]
    splits = _splits(spec, folder, train, test, test, classnames, val_is_test=True)
    return splits.replace(info={**splits.info, **info, "listing": "file-system order"})


def build_imagenetv2(spec: CoopSpec, root: str | None, *, check_files: bool = True) -> DatasetSplits:
    folder = dataset_folder(spec, root)
    names_path = os.path.join(folder, "classnames.txt")
    names = list(read_wnid_names(names_path, f"{spec.name}: class names", spec.section).values())
    image_dir = require_dir(os.path.join(folder, spec.image_dir), f"{spec.name}: image folder", spec.section)
    items = []
    for label, classname in enumerate(names):
        sub = require_dir(os.path.join(image_dir, str(label)), f"{spec.name}: class folder", spec.section)
        items.extend(Datum(os.path.join(sub, f), label, classname) for f in files_in(sub, sort=False))
    return _splits(spec, folder, [], [], items, names)


def build_wnid_test_set(spec: CoopSpec, root: str | None, *, check_files: bool = True) -> DatasetSplits:
    """ImageNet-Sketch, -A, -R: the wnid folders present are the classes, sorted."""
    folder = dataset_folder(spec, root)
    names_path = os.path.join(folder, "classnames.txt")
    names = read_wnid_names(names_path, f"{spec.name}: class names", spec.section)
    image_dir = require_dir(os.path.join(folder, spec.image_dir), f"{spec.name}: image folder", spec.section)
    wnids = subfolders(image_dir)
    if not wnids:
        raise MissingDataError(f"{spec.name}: no class folders in {image_dir}.{where_to_get(spec.section)}")
    items = _scan_class_folders(spec, image_dir, wnids, names, names_path)
    return _splits(spec, folder, [], [], items, [names[w] for w in wnids])


_BUILDERS = {
    "imagenet": build_imagenet,
    "fgvc_aircraft": build_fgvc_aircraft,
    "imagenetv2": build_imagenetv2,
    "imagenet_sketch": build_wnid_test_set,
    "imagenet_a": build_wnid_test_set,
    "imagenet_r": build_wnid_test_set,
}


def coop_builder(name: str):
    """The `builder(root, check_files=True)` of one CoOp dataset."""
    spec = SPECS[name]
    build = _BUILDERS.get(name, build_split_file)

    def builder(root, *, check_files: bool = True) -> DatasetSplits:
        return build(spec, root, check_files=check_files)

    builder.__name__ = f"build_{name}"
    builder.__doc__ = f"Read {spec.section} from `<root>/{spec.folder}/` (CoOp layout)."
    return builder
