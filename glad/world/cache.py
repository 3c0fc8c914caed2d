"""Where the world's artifacts live, how their staleness is detected, and safe writes.

Everything the world builds (dataset folders, glad-tiny weights) sits under
`$GLAD_CACHE` (default `~/.cache/glad`) and is keyed by a hash of the source code
that made it, so editing the generator rebuilds it rather than serving stale files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from glad.io import atomic_write_bytes  # noqa: F401  (the world writes its weights with it)
from glad.io import atomic_write_json as _atomic_write_json

_HERE = Path(__file__).resolve().parent

# The modules that decide what a picture of the world and its captions look like.
GENERATOR_MODULES = ("vocab", "scenes", "render", "captions")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir` if given, else `$GLAD_CACHE`, else `~/.cache/glad`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from glad.io import glad_cache

    return Path(glad_cache())


def source_hash(modules: Iterable[str], extra: object = None) -> str:
    """A short sha256 over the source of `modules` (of glad.world) and a JSON-able `extra`."""
    h = hashlib.sha256()
    for name in modules:
        h.update(name.encode() + b"\0")
        h.update((_HERE / f"{name}.py").read_bytes().replace(b"\r\n", b"\n"))
    if extra is not None:
        h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()[:16]


def generator_hash() -> str:
    """The hash of the world's generator: same hash, same pictures and captions."""
    return source_hash(GENERATOR_MODULES)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """The world's JSON files: compact and key-sorted (written through glad.io)."""
    _atomic_write_json(path, obj, indent=1, sort_keys=True)


@contextlib.contextmanager
def building_dir(final: Path, marker: str) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `final`; on success it becomes `final`.

    `marker` is the file whose presence makes a folder complete. If another process
    finished `final` first, its copy wins and ours is dropped; a `final` without the
    marker (left by a crash, or by hand) is thrown away. Readers never see half a folder.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".building", dir=final.parent))
    try:
        yield tmp
        try:
            os.replace(tmp, final)
        except OSError:
            if (final / marker).is_file():
                return  # another process won the race; its copy is as good as ours
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".stale", dir=final.parent))
            os.replace(final, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: Path, waiting: str | None = None) -> Iterator[None]:
    """An exclusive advisory lock on `path` (POSIX); a no-op where fcntl is missing.

    It keeps two processes (two tests, two ranks) from pretraining the same model at once.
    `waiting` is said once (a log warning) when another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # Windows: the atomic renames still keep the cache consistent
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                import logging

                logging.getLogger("glad").warning(waiting)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
