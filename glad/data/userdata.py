"""Users' own data: an image folder, a split JSON in CoOp's format, or a CSV of path,label.

* `imagefolder:<path>`: one sub-folder per class (images may sit in nested folders), or
  `train/`, `val/`, `test/` levels each holding the class folders. Classes are the sorted
  union of the class folder names; label = index in that order. Without split levels,
  each class is split by a fixed seed (`SPLIT_SEED`) into 50% train, 20% val, 30% test,
  the proportions CoOp used to make its own split files. A missing level is an empty split.
* `<file>.json`: `{"train"|"val"|"test": [[path, label, class name], ...]}`, paths
  relative to the JSON's folder.
* `<file>.csv`: rows `path,label[,split]` (optional header naming the columns `path`,
  `label`, and optionally `classname` and `split`); paths relative to the CSV's folder.
  Text labels are class names (sorted, then numbered); integer labels are kept and named
  by a `classname` column when there is one. Without a split column, the seeded split
  above is made.
"""

from __future__ import annotations

import csv
import os
import random
import warnings
from collections import defaultdict

from glad.config import IMAGEFOLDER_PREFIX  # what names an image folder as a dataset

from .readers import (
    IMAGE_EXTENSIONS,
    check_files_exist,
    classnames_from_items,
    read_split_json,
    require_dir,
    require_file,
    subfolders,
)
from .templates import DEFAULT_TEMPLATE
from .types import DatasetError, DatasetSplits, Datum

SPLIT_SEED = 1
SPLIT_FRACTIONS = (0.5, 0.2)  # train, val; the rest is test
_SPLITS = ("train", "val", "test")


def _images_under(folder: str) -> list[str]:
    """Image files below `folder`, at any depth, in sorted path order. Linked folders are
    followed once each; a link back to a folder above it (a cycle) is refused."""
    found = []
    seen = {os.path.realpath(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            sub = os.path.join(dirpath, d)
            real = os.path.realpath(sub)
            if real == os.path.commonpath([real, os.path.realpath(dirpath)]):
                raise DatasetError(f"imagefolder: {sub} links back to {real}, a folder above it (a cycle); "
                                   "remove the link or point it elsewhere")
            if real not in seen:  # a folder reached through two links is read once
                seen.add(real)
                keep.append(d)
        dirnames[:] = keep
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames)
                     if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
    return found


def seeded_split(items: list[Datum], seed: int = SPLIT_SEED) -> dict[str, list[Datum]]:
    """Split each class into train/val/test by `SPLIT_FRACTIONS`, shuffled by `seed`.

    Every class with at least two images keeps one for test; with three, one for val too.
    """
    rng = random.Random(seed)
    by_label: dict[int, list[Datum]] = defaultdict(list)
    for d in items:
        by_label[d.label].append(d)
    out: dict[str, list[Datum]] = {s: [] for s in _SPLITS}
    for label in sorted(by_label):
        group = list(by_label[label])
        rng.shuffle(group)
        n = len(group)
        n_train = max(1, round(n * SPLIT_FRACTIONS[0]))
        n_val = round(n * SPLIT_FRACTIONS[1])
        if n >= 3:
            n_val = max(1, n_val)
        n_train = min(n_train, max(1, n - n_val - (1 if n >= 2 else 0)))
        n_val = min(n_val, n - n_train - (1 if n >= 2 else 0))
        out["train"] += group[:n_train]
        out["val"] += group[n_train:n_train + n_val]
        out["test"] += group[n_train + n_val:]
    return out


def _finish(name, splits, classnames, check_files, source) -> DatasetSplits:
    if check_files:
        check_files_exist(splits["train"] + splits["val"] + splits["test"], source)
    return DatasetSplits(name=name, train=splits["train"], val=splits["val"], test=splits["test"],
                         classnames=classnames, template=DEFAULT_TEMPLATE, folder=None)


def build_imagefolder(path: str, *, check_files: bool = True) -> DatasetSplits:
    """Read `imagefolder:<path>` (see the module docstring for the layouts)."""
    root = os.path.abspath(os.path.expanduser(path))
    require_dir(root, "imagefolder")
    name = IMAGEFOLDER_PREFIX + root
    top = subfolders(root)
    levels = bool(top) and set(top) <= set(_SPLITS)
    split_dirs = {s: os.path.join(root, s) for s in _SPLITS if s in top} if levels else {None: root}
    classnames = sorted({c for d in split_dirs.values() for c in subfolders(d)})
    if not classnames:
        raise DatasetError(f"imagefolder: {root} has no class folders; expected {root}/<class>/<images> "
                           f"or {root}/train/<class>/<images> (with optional val/ and test/).")
    label_of = {c: i for i, c in enumerate(classnames)}
    per_split: dict[str | None, list[Datum]] = {}
    for split, d in split_dirs.items():
        per_split[split] = [Datum(p, label_of[c], c)
                            for c in subfolders(d) for p in _images_under(os.path.join(d, c))]
    if not any(per_split.values()):
        raise DatasetError(f"imagefolder: no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}.")
    if levels:
        splits = {s: per_split.get(s, []) for s in _SPLITS}
    else:
        splits = seeded_split(per_split[None])
    found = {d.label for items in splits.values() for d in items}
    empty = [c for c in classnames if label_of[c] not in found]
    if empty:
        warnings.warn(f"imagefolder: {root}: class folder(s) without images: {empty[:5]}", stacklevel=3)
    if levels:
        _warn_split_mismatch(root, split_dirs)
    return _finish(name, splits, classnames, False, name)


def _warn_split_mismatch(root: str, split_dirs: dict) -> None:
    """Name the classes that only some split folders hold (`Red_Circle` in test/ beside
    `red_circle` in train/ are two classes then, each missing from a split)."""
    present = {s: set(subfolders(d)) for s, d in split_dirs.items()}
    everywhere = set.intersection(*present.values())
    for split, classes in present.items():
        missing = sorted(set().union(*present.values()) - classes)
        if missing:
            lowered = {c.lower(): c for c in classes}
            near = [f"{m} (here: {lowered[m.lower()]})" for m in missing if m.lower() in lowered]
            warnings.warn(f"imagefolder: {root}/{split} has no folder for {len(missing)} class(es) the other "
                          f"splits hold: {', '.join((near or missing)[:10])}"
                          f"{' - names differ in case only' if near else ''}; "
                          f"{len(everywhere)} class(es) are in every split", stacklevel=4)


def build_split_json(path: str, *, check_files: bool = True) -> DatasetSplits:
    """Read a split file in CoOp's format; image paths are relative to its folder."""
    path = os.path.abspath(os.path.expanduser(path))
    require_file(path, "split file")
    splits = read_split_json(path, os.path.dirname(path), "split file")
    classnames = classnames_from_items(splits["train"] + splits["val"] + splits["test"], path)
    return _finish(path, splits, classnames, check_files, f"split file {path}")


def build_csv(path: str, *, check_files: bool = True) -> DatasetSplits:
    """Read a CSV of `path,label[,split]` rows (see the module docstring)."""
    path = os.path.abspath(os.path.expanduser(path))
    require_file(path, "CSV file")
    base = os.path.dirname(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)  # rows numbered as the file's lines, blank ones skipped
        rows = [(reader.line_num, r) for r in reader if r and any(cell.strip() for cell in r)]
    if not rows:
        raise DatasetError(f"CSV file {path} is empty; expected rows 'path,label[,split]'.")
    columns = ["path", "label", "split"]
    if rows[0][1][0].strip().lower() == "path":
        columns = [c.strip().lower() for c in rows[0][1]]
        rows = rows[1:]
        if "label" not in columns:
            raise DatasetError(f"CSV file {path}: header {columns} has no 'label' column.")
    records = []
    for n, row in rows:
        rec = {c: row[i].strip() for i, c in enumerate(columns) if i < len(row)}
        if not rec.get("path") or not rec.get("label"):
            raise DatasetError(f"CSV file {path} row {n} is {row}; expected 'path,label[,split]'.")
        if "split" in rec and rec["split"] not in _SPLITS:
            raise DatasetError(f"CSV file {path} row {n}: split {rec['split']!r} is not one of "
                               f"train, val, test.")
        records.append(rec)
    numeric = all(r["label"].lstrip("-").isdigit() for r in records)
    if numeric:
        items = [Datum(os.path.join(base, r["path"]), int(r["label"]),
                       r.get("classname") or r["label"]) for r in records]
        classnames = classnames_from_items(items, f"CSV file {path}")
        if not any("classname" in r for r in records):
            warnings.warn(f"CSV file {path} has integer labels and no classname column; the prompts "
                          f"will read 'a photo of a 3.'. Add a classname column.", stacklevel=3)
    else:
        classnames = sorted({r["label"] for r in records})
        label_of = {c: i for i, c in enumerate(classnames)}
        items = [Datum(os.path.join(base, r["path"]), label_of[r["label"]], r["label"]) for r in records]
    if any("split" in r for r in records):
        splits = {s: [d for d, r in zip(items, records, strict=True) if r.get("split", "train") == s]
                  for s in _SPLITS}
    else:
        splits = seeded_split(items)
    return _finish(path, splits, classnames, check_files, f"CSV file {path}")
