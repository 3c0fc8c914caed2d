"""Readers for the on-disk pieces of the CoOp layouts: split JSONs, name lists, class folders."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

from .types import COOP_INSTRUCTIONS, DatasetError, Datum, MissingDataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def where_to_get(section: str | None) -> str:
    """The pointer appended to every missing-data error."""
    if section is None:
        return ""
    return f" Prepare it as described under '{section}' in {COOP_INSTRUCTIONS}."


def require_dir(path: str, what: str, section: str | None = None) -> str:
    if not os.path.isdir(path):
        raise MissingDataError(f"{what}: folder not found: {path}.{where_to_get(section)}")
    return path


def require_file(path: str, what: str, section: str | None = None) -> str:
    if not os.path.isfile(path):
        raise MissingDataError(f"{what}: file not found: {path}.{where_to_get(section)}")
    return path


def listdir_visible(path: str) -> list[str]:
    """Names in a folder, hidden ones (`.DS_Store`, `._x`) left out, sorted."""
    return sorted(n for n in os.listdir(path) if not n.startswith("."))


def subfolders(path: str) -> list[str]:
    """Visible sub-folder names, sorted (the label order of every folder-per-class layout)."""
    with os.scandir(path) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())


def files_in(path: str, extensions: Sequence[str] | None = None, *, sort: bool = True) -> list[str]:
    """Visible regular files of a folder; only `extensions` (lower-case) when given.

    Sorted by default. `sort=False` keeps the file system's order (os.listdir's), which is
    what CoOp's ImageNet readers use (Dassl's `listdir_nohidden`): the same order, hence the
    same few-shot draws, as CoOp on the same files and the same kind of file system.
    """
    with os.scandir(path) as it:
        names = [e.name for e in it if not e.name.startswith(".") and e.is_file()]
    if extensions is not None:
        names = [n for n in names if n.lower().endswith(tuple(extensions))]
    return sorted(names) if sort else names


def read_json(path: str, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{what}: {path} is not valid JSON ({e}); restore it from its source.") from e


def read_split_json(path: str, image_root: str, what: str) -> dict[str, list[Datum]]:
    """Read a CoOp split file: {"train"|"val"|"test": [[relative path, label, class name], ...]}.

    Paths are joined to `image_root` (the image folder, or the dataset folder for
    StanfordCars). Missing splits are empty; other keys are ignored.
    """
    data = read_json(path, what)
    if not isinstance(data, dict) or not any(k in data for k in ("train", "val", "test")):
        raise DatasetError(f"{what}: {path} must be an object with 'train', 'val' and 'test' lists "
                           f"of [relative path, label, class name]; found {type(data).__name__} "
                           f"with keys {sorted(data) if isinstance(data, dict) else '-'}.")
    out: dict[str, list[Datum]] = {}
    for split in ("train", "val", "test"):
        items = []
        for i, entry in enumerate(data.get(split, [])):
            if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
                raise DatasetError(f"{what}: {path}: {split}[{i}] is {entry!r}; expected "
                                   f"[relative path, integer label, class name].")
            rel, label, classname = entry
            try:
                label = int(label)
            except (TypeError, ValueError):
                raise DatasetError(f"{what}: {path}: {split}[{i}] has label {label!r}; expected an "
                                   f"integer.") from None
            items.append(Datum(os.path.join(image_root, str(rel)), label, str(classname)))
        out[split] = items
    return out


def classnames_from_items(items: Iterable[Datum], source: str) -> list[str]:
    """Class names indexed by label; labels must be 0..n-1, each with one name."""
    names: dict[int, str] = {}
    for d in items:
        seen = names.setdefault(d.label, d.classname)
        if seen != d.classname:
            raise DatasetError(f"{source}: label {d.label} is named both {seen!r} and {d.classname!r}; "
                               f"each label needs a single class name.")
    if not names:
        raise DatasetError(f"{source}: no items; a dataset needs at least one labelled image.")
    missing = sorted(set(range(max(names) + 1)) - set(names))
    if min(names) < 0 or missing:
        raise DatasetError(f"{source}: labels must be 0..n-1 with none skipped; "
                           f"found {len(names)} labels from {min(names)} to {max(names)}"
                           + (f", missing {missing[:10]}" if missing else "") + ".")
    return [names[i] for i in range(len(names))]


def read_wnid_names(path: str, what: str, section: str | None = None) -> dict[str, str]:
    """Read ImageNet's `classnames.txt`: lines `<wnid> <name words>`, kept in file order."""
    require_file(path, what, section)
    names: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.strip().split(" ")
            if not parts[0]:
                continue
            if len(parts) < 2:
                raise DatasetError(f"{what}: {path} line {n} is {line.strip()!r}; expected "
                                   f"'<folder id> <class name>'.")
            names[parts[0]] = " ".join(parts[1:])
    return names


def read_lines(path: str, what: str, section: str | None = None) -> list[str]:
    require_file(path, what, section)
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def check_files_exist(items: Iterable[Datum], source: str, limit: int = 5) -> None:
    """Fail now, naming the paths, if any item's image is absent.

    One directory listing per folder instead of a stat per file: ImageNet-sized
    splits are checked in seconds.
    """
    by_dir: dict[str, list[str]] = {}
    for d in items:
        head, tail = os.path.split(d.impath)
        by_dir.setdefault(head, []).append(tail)
    missing: list[str] = []
    count = 0
    for folder, names in by_dir.items():
        try:
            present = set(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            present = set()
        for name in names:
            if name not in present:
                count += 1
                if len(missing) < limit:
                    missing.append(os.path.join(folder, name))
    if count:
        raise MissingDataError(
            f"{source} names {count} image(s) that do not exist, e.g. {', '.join(missing)}. "
            f"The image folder is incomplete or does not match the split file; re-extract the "
            f"images next to the split file (CoOp layout: {COOP_INSTRUCTIONS}).")
