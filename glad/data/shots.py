"""Few-shot draws identical to CoOp/Dassl's, cached as JSON per (dataset, shots, seed).

The draw (Dassl `generate_fewshot_dataset`, as CoOp calls it): Python's Mersenne Twister
seeded once with the seed; the train split, then the val split with min(K, 4) shots, are
each grouped by label in first-seen order, and every group of at least K items gives
`random.sample(group, K)`; a smaller group is kept whole (or, with `repeat=True`, drawn
with `random.choices(group, k=K)`). Datasets whose val set is their test set (ImageNet)
draw the train split only, as CoOp does. A private `random.Random(seed)` makes the same
draws as seeding the global `random` module, without touching its state.

Cache: `$GLAD_CACHE` (or `~/.cache/glad`) `/fewshot/<dataset>/shot_{K}-seed_{seed}.json`,
or an explicit `cache_dir`; nothing is written into the data folder. A draw found at
`<dataset folder>/split_fewshot/shot_{K}-seed_{seed}.json` (where earlier versions wrote)
is read too. A cached draw is reused only if it was drawn from the same items; otherwise it
is redrawn with a warning. CoOp's own ImageNet draws (`split_fewshot/shot_K-seed_S.pkl`)
are used when present, read by `glad.data.coop_pickle` (never plainly unpickled).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import warnings

from ..io import atomic_write_text
from .types import DatasetSplits, Datum

CACHE_FORMAT = "glad.fewshot/1"


def sample_per_class(items: list[Datum], shots: int, rng: random.Random, repeat: bool = False) -> list[Datum]:
    """One Dassl draw over one split: per label (first-seen order), `shots` items by `rng`."""
    groups: dict[int, list[Datum]] = {}
    for d in items:
        groups.setdefault(d.label, []).append(d)
    out: list[Datum] = []
    for group in groups.values():
        if len(group) >= shots:
            out.extend(rng.sample(group, shots))
        elif repeat:
            out.extend(rng.choices(group, k=shots))
        else:
            out.extend(group)
    return out


def draw_fewshot(dataset: DatasetSplits, shots: int, seed: int, repeat: bool = False):
    """(train, val) of the CoOp draw; no caching."""
    rng = random.Random(seed)
    train = sample_per_class(dataset.train, shots, rng, repeat)
    if dataset.val_is_test:
        return train, dataset.val
    return train, sample_per_class(dataset.val, min(shots, 4), rng, repeat)


def default_cache_root() -> str:
    """`$GLAD_CACHE`, else `~/.cache/glad` (glad.io.glad_cache)."""
    from glad.io import glad_cache

    return glad_cache()


def _file_name(shots: int, seed: int, repeat: bool) -> str:
    return f"shot_{shots}-seed_{seed}{'-repeat' if repeat else ''}.json"


def _slug(dataset: DatasetSplits) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset.name).strip("_")[-60:] or "dataset"
    digest = hashlib.sha1((dataset.folder or dataset.name).encode()).hexdigest()[:8]
    return f"{safe}-{digest}"


def cache_candidates(dataset: DatasetSplits, shots: int, seed: int, repeat: bool = False,
                     cache_dir: str | None = None) -> list[str]:
    """Where a draw is looked for, in order; the last one is where a new draw is written."""
    fname = _file_name(shots, seed, repeat)
    central = os.path.join("fewshot", _slug(dataset), fname)
    if cache_dir is not None:
        return [os.path.join(os.path.expanduser(os.fspath(cache_dir)), central)]
    paths = []
    if dataset.folder is not None:  # read only: where earlier versions wrote
        paths.append(os.path.join(dataset.folder, "split_fewshot", fname))
    paths.append(os.path.join(default_cache_root(), central))
    return paths


def _coop_draw(dataset: DatasetSplits, shots: int, seed: int, repeat: bool):
    """CoOp's own draw (`split_fewshot/shot_K-seed_S.pkl`, ImageNet) as (train, val), or None."""
    folder = dataset.info.get("coop_fewshot_dir")
    if folder is None or repeat:
        return None
    path = os.path.join(folder, f"shot_{shots}-seed_{seed}.pkl")
    if not os.path.isfile(path):
        return None
    from .coop_pickle import read_coop_pickle

    train = read_coop_pickle(path, dataset.info.get("image_dir", dataset.folder or ""))["train"]
    known = set(dataset.train)
    stray = [d for d in train if d not in known]
    if stray:
        warnings.warn(f"CoOp's draw {path} names {len(stray)} item(s) not in {dataset.name} (e.g. "
                      f"{stray[0].impath}); drawing again.", stacklevel=3)
        return None
    return train, dataset.val


def _rel(path: str, folder: str | None) -> str:
    # Exact prefix strip (no normalisation), so decoding gives back the identical string.
    if folder is not None and path.startswith(folder.rstrip(os.sep) + os.sep):
        return path[len(folder.rstrip(os.sep)) + 1:]
    return path


def _rel_fn(folder: str | None):
    """`_rel` for one folder, as a fast closure (used on every training item)."""
    if folder is None:
        return lambda path: path
    prefix = folder.rstrip(os.sep) + os.sep
    n = len(prefix)
    return lambda path: path[n:] if path.startswith(prefix) else path


def _encode(items: list[Datum], folder: str | None) -> list[list]:
    return [[_rel(d.impath, folder), d.label, d.classname] for d in items]


def _decode(rows, folder: str | None) -> list[Datum]:
    base = folder or ""
    return [Datum(os.path.join(base, str(p)), int(y), str(c)) for p, y, c in rows]


def fingerprint(dataset: DatasetSplits) -> str:
    """Hash of the items a draw is made from (train, and val unless it is the test set)."""
    h = hashlib.sha256()
    sources = [dataset.train] if dataset.val_is_test else [dataset.train, dataset.val]
    for items in sources:
        # one update per split: ImageNet's 1.28M training items hash in about a second
        rel = _rel_fn(dataset.folder)
        text = "".join(f"{rel(d.impath)}\t{d.label}\t{d.classname}\n" for d in items)
        h.update(text.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


def _load(path: str, dataset: DatasetSplits, shots: int, seed: int, repeat: bool, fp: str):
    """The cached (train, val), or None (with a warning when the file is stale or bad)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("shots") != shots or data.get("seed") != seed or bool(data.get("repeat")) != repeat:
            raise ValueError(f"it holds shots={data.get('shots')} seed={data.get('seed')}")
        if data.get("source") not in (None, fp):
            raise ValueError("the dataset's items changed since it was drawn")
        train = _decode(data["train"], dataset.folder)
        val = dataset.val if dataset.val_is_test else _decode(data["val"], dataset.folder)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        warnings.warn(f"few-shot cache {path} not used ({e}); drawing again.", stacklevel=3)
        return None
    known_train, known_val = set(dataset.train), set(dataset.val)
    stray = [d for d in train if d not in known_train] + [d for d in val if d not in known_val]
    if stray:
        warnings.warn(f"few-shot cache {path} names {len(stray)} item(s) not in {dataset.name} "
                      f"(e.g. {stray[0].impath}); drawing again.", stacklevel=3)
        return None
    return train, val


def _save(path: str, dataset, shots, seed, repeat, fp, train, val) -> str | None:
    payload = {"format": CACHE_FORMAT, "dataset": dataset.name, "shots": shots, "seed": seed,
               "repeat": repeat, "source": fp, "train": _encode(train, dataset.folder)}
    if not dataset.val_is_test:
        payload["val"] = _encode(val, dataset.folder)
    try:
        atomic_write_text(path, json.dumps(payload, indent=1))
        return path
    except OSError as e:
        warnings.warn(f"could not cache the few-shot draw ({path}: {e.strerror or e}); it will be redrawn "
                      f"(identically) next time.", stacklevel=3)
        return None


def fewshot(dataset: DatasetSplits, shots: int, seed: int, cache_dir: str | None = None, *,
            repeat: bool = False, use_cache: bool = True) -> DatasetSplits:
    """The dataset with train (and val) replaced by CoOp's K-shot draw for `seed`.

    Draw over all classes, before any base/novel cut (`subsample_classes` comes after).
    `shots < 1` returns the dataset unchanged, as in CoOp. The draw is cached as JSON and
    reused (see the module docstring for where).
    """
    if isinstance(shots, bool) or not isinstance(shots, int):
        raise TypeError(f"shots must be an int, got {shots!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int (CoOp seeds with 1, 2, 3), got {seed!r}")
    if shots < 1:
        return dataset
    result = _coop_draw(dataset, shots, seed, repeat)
    if result is not None:
        train, val = result
        return dataset.replace(train=train, val=val, info={**dataset.info, "shots": shots, "seed": seed,
                                                           "draw": "coop-pickle"})
    fp = fingerprint(dataset)
    paths = cache_candidates(dataset, shots, seed, repeat, cache_dir)
    if use_cache:
        for path in paths:
            result = _load(path, dataset, shots, seed, repeat, fp)
            if result is not None:
                break
    if result is None:
        result = draw_fewshot(dataset, shots, seed, repeat)
        if use_cache:
            _save(paths[-1], dataset, shots, seed, repeat, fp, *result)
    train, val = result
    return dataset.replace(train=train, val=val, info={**dataset.info, "shots": shots, "seed": seed})
