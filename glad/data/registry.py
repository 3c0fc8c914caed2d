"""`build_dataset` and the registry of dataset names.

The 15 CoOp names are registered here. Other packages add theirs with
`register_dataset(name, builder)`, or name a module that registers them when imported
with `register_provider(module)`: providers are imported the first time an unknown name
is asked for. glad.data names no provider itself (it imports nothing above it); glad's
engine registers glad.world, the built-in offline datasets.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

from glad.config import user_data
from glad.providers import load_providers, register_provider  # noqa: F401 - re-exported

from .coop import SPECS, coop_builder
from .types import DatasetError, DatasetSplits
from .userdata import build_csv, build_imagefolder, build_split_json

Builder = Callable[..., DatasetSplits]

_REGISTRY: dict[str, Builder] = {name: coop_builder(name) for name in SPECS}
COOP_DATASETS: tuple[str, ...] = tuple(SPECS)

_ALIASES = {"imagenet_v2": "imagenetv2", "imagenet_adversarial": "imagenet_a",
            "imagenet_rendition": "imagenet_r", "caltech_101": "caltech101", "food_101": "food101",
            "flowers102": "oxford_flowers", "dtd_textures": "dtd"}


def normalize_name(name: str) -> str:
    """CLI spelling of a dataset name: lower case, `-` read as `_` (`imagenet-a` -> `imagenet_a`)."""
    key = name.strip().lower().replace("-", "_")
    return _ALIASES.get(key, key)


def register_dataset(name: str, builder: Builder) -> None:
    """Make `build_dataset(name, root)` call `builder(root)`, which returns a DatasetSplits.

    Registering a name again replaces the builder; the 15 CoOp names are reserved.
    """
    key = normalize_name(name)
    if key in SPECS:
        raise ValueError(f"{name!r} is a CoOp dataset name and cannot be re-registered; "
                         f"pick another name for your dataset.")
    if not callable(builder):
        raise TypeError(f"builder for {name!r} must be callable(root) -> DatasetSplits, "
                        f"got {type(builder).__name__}")
    _REGISTRY[key] = builder


def available_datasets() -> list[str]:
    """Every registered name (CoOp's first, then the built-in and user-registered ones)."""
    load_providers()
    return list(_REGISTRY)


def _call(builder: Builder, root, check_files: bool) -> DatasetSplits:
    try:
        accepts = "check_files" in inspect.signature(builder).parameters
    except (TypeError, ValueError):
        accepts = False
    return builder(root, check_files=check_files) if accepts else builder(root)


def build_dataset(name: str, root: str | os.PathLike | None = None, *, check_files: bool = True) -> DatasetSplits:
    """Build a dataset by name.

    `name` is a CoOp name from DATASETS.md (`oxford_pets`, `imagenet_a`, ...) read from
    `<root>/<its folder>/`, `imagefolder:<path>`, a split file `<path>.json`, a
    `<path>.csv`, or any name registered with `register_dataset`. `root` defaults to
    the `GLAD_DATA` environment variable. With `check_files` (default), every image a
    split file names is checked to exist now rather than an hour into training.
    """
    if root is None:
        root = os.environ.get("GLAD_DATA") or None
    raw = os.fspath(name).strip()
    if mine := user_data(raw):
        kind, path = mine
        if kind == "imagefolder":
            return build_imagefolder(path, check_files=check_files)
        build = build_split_json if kind == "json" else build_csv
        return build(_user_path(path, root), check_files=check_files)
    key = normalize_name(raw)
    if key not in _REGISTRY:
        load_providers()
    if key not in _REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(_REGISTRY)}, "
                           f"'imagefolder:<path>', a split file '<path>.json' or a '<path>.csv'.")
    dataset = _call(_REGISTRY[key], None if root is None else os.fspath(root), check_files)
    if not isinstance(dataset, DatasetSplits):
        raise TypeError(f"the builder of {key!r} returned {type(dataset).__name__}, not DatasetSplits")
    return dataset


def _user_path(path: str, root) -> str:
    """A relative split/CSV path is looked up in the working folder, then under the data root."""
    path = os.path.expanduser(path)
    if not os.path.isabs(path) and not os.path.exists(path) and root is not None:
        candidate = os.path.join(os.fspath(root), path)
        if os.path.exists(candidate):
            return candidate
    return path
