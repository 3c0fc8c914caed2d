"""Torch datasets and loaders over `Datum` lists: decoding, transforms, workers, pinned memory."""

from __future__ import annotations

import multiprocessing as mp
import random
import warnings
from collections.abc import Callable, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .types import CorruptImageError, Datum, MissingDataError


def load_image(path: str) -> Image.Image:
    """Decode an image fully (so truncated files fail here) and convert it to RGB."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise MissingDataError(f"image not found: {path}; it was listed when the dataset was built, "
                               f"so the data folder changed since.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CorruptImageError(f"cannot decode image {path} ({type(e).__name__}: {e}); replace or "
                                f"remove the file (library users: ImageDataset(..., skip_corrupt=True) "
                                f"skips and counts such images).") from e


class ImageDataset(Dataset):
    """(image tensor, label) pairs from a list of `Datum`.

    An unreadable image raises `CorruptImageError` naming its path. With
    `skip_corrupt=True` it is replaced by the next readable item of the list, warned
    about once, and counted in `num_corrupt` (shared with the loader's worker processes).
    """

    def __init__(self, items: Sequence[Datum], transform: Callable | None = None, *,
                 skip_corrupt: bool = False):
        self.items = list(items)
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        # A shared counter, so skips in worker processes are seen by the main process.
        self._corrupt = mp.get_context().Value("l", 0) if skip_corrupt else None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_corrupt(self) -> int:
        """Images skipped as unreadable so far (0 unless skip_corrupt)."""
        return 0 if self._corrupt is None else int(self._corrupt.value)

    def _load(self, index: int) -> Image.Image:
        if not self.skip_corrupt:
            return load_image(self.items[index].impath)
        n = len(self.items)
        for step in range(n):
            item = self.items[(index + step) % n]
            try:
                return load_image(item.impath)
            except (CorruptImageError, MissingDataError) as e:
                with self._corrupt.get_lock():
                    self._corrupt.value += 1
                warnings.warn(f"skipped: {e}", stacklevel=2)
        raise CorruptImageError(f"none of the {n} images could be decoded (first: {self.items[0].impath}).")

    def __getitem__(self, index: int):
        image = self._load(index)
        label = self.items[index].label  # the substitute, if any, is stood in for this item's label
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; give random/numpy the same seed.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # numpy is optional for glad.data
        pass


def make_loader(items: Sequence[Datum] | Dataset, transform: Callable | None = None, batch_size: int = 32,
                shuffle: bool = False, workers: int = 4, seed: int | None = None, drop_last: bool = False,
                pin_memory: bool | None = None, distributed: bool = False, sampler: Sampler | None = None,
                skip_corrupt: bool = False, persistent_workers: bool | None = None) -> DataLoader:
    """A DataLoader over `items` (a Datum list, or a ready Dataset).

    `seed` fixes the shuffle order and the workers' augmentation seeds. `pin_memory`
    defaults to on when CUDA is available. `distributed=True` uses a DistributedSampler
    (call `loader.sampler.set_epoch(epoch)` each epoch); `sampler` overrides both.
    """
    dataset = items if isinstance(items, Dataset) else ImageDataset(items, transform, skip_corrupt=skip_corrupt)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(seed)
    if sampler is None and distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=0 if seed is None else seed,
                                     drop_last=drop_last)
    workers = max(0, int(workers))
    if persistent_workers is None:
        persistent_workers = workers > 0
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False, sampler=sampler,
        num_workers=workers, pin_memory=pin_memory, drop_last=drop_last, generator=generator,
        worker_init_fn=_seed_worker if workers > 0 else None,
        persistent_workers=persistent_workers and workers > 0,
    )
