"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path in the same folder; on success it replaces `path` atomically."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj, *, indent: int = 2, sort_keys: bool = False) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def append_line(path: str, line: str) -> None:
    """Append one line and flush it to disk (JSONL results survive a kill between records)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


class FolderBusyError(RuntimeError):
    """Another process holds the folder's lock."""


@contextlib.contextmanager
def folder_lock(folder: str, name: str = ".glad.lock"):
    """Hold an exclusive lock on `folder` (a file `name` in it) for the block; another process
    asking meanwhile gets FolderBusyError naming the holder. The lock goes with the process
    (an advisory flock), so a killed run leaves none behind."""
    import fcntl
    import time

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise FolderBusyError(f"{folder} is in use by another glad run ({holder}); wait for it to finish, "
                                  "or choose another --output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def glad_cache() -> str:
    """glad's cache folder: `$GLAD_CACHE`, else `~/.cache/glad` (few-shot draws, the built-in
    world and glad-tiny). An unusable one is refused naming the variable, not a deep path."""
    configured = os.environ.get("GLAD_CACHE")
    path = os.path.expanduser(configured or os.path.join("~", ".cache", "glad"))
    if path in _usable_caches and os.path.isdir(path):  # written to before in this process
        return path
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        what = f"GLAD_CACHE={configured}" if configured else f"glad's cache folder {path}"
        raise CacheUnusableError(f"{what} is not a usable folder ({e.strerror or e}); point GLAD_CACHE to a "
                                 "writable folder") from None
    _usable_caches.add(path)
    return path


_usable_caches: set[str] = set()


class CacheUnusableError(ValueError):
    """glad's cache folder cannot be created or written."""
