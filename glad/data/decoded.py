"""Images decoded once: a few-shot training set kept as uint8 pixels, and test sets kept
resized and centre-cropped, so that epochs and adapters stop paying for JPEG decoding.

* `DecodedImages`: every training image decoded once (by threads) into one shared-memory
  uint8 buffer at its ORIGINAL size; each epoch then only applies the training transform
  (CoOp's random resized crop of the original, bicubic, flip, normalisation) to a PIL view
  of those pixels. Batches are bit-identical to decoding the files every epoch.
* `PreparedTestImages`: a test set after the evaluation transform's geometry (resize and crop,
  or squash, as the model's preprocessing says), as uint8 [N, 3, H, W]; `normalize` turns a
  batch into exactly what the test transform gives (the same float ops).

Both refuse sets larger than their memory budget (`fits`); callers then decode as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .loader import load_image
from .transforms import Preprocess
from .types import CorruptImageError, Datum

log = logging.getLogger("glad")
GIB = 1 << 30


def header_sizes(items: Sequence[Datum]) -> list[tuple[int, int]]:
    """(height, width) of each image, from its file header (nothing decoded). Every unreadable
    file is named in one error (the first 20 and a count), not one per run."""
    sizes, bad = [], []
    for d in items:
        try:
            with Image.open(d.impath) as im:
                w, h = im.size
        except (OSError, SyntaxError, ValueError) as e:
            bad.append(f"{d.impath} ({type(e).__name__})")
            continue
        sizes.append((h, w))
    _raise_unreadable(bad)
    return sizes


def _raise_unreadable(bad: list[str]) -> None:
    if bad:
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise CorruptImageError(f"cannot decode {len(bad)} image(s): {', '.join(bad[:20])}{more}; replace or "
                                f"remove the files.")


def _decode_all(items, workers: int, convert=np.asarray):
    """(index, convert(RGB image)) for every item, decoded by `workers` threads: PIL decodes
    with the GIL released, and threads start in microseconds where processes take a second.
    Every file that does not decode is named in one error at the end."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        try:
            return i, convert(load_image(items[i].impath))
        except CorruptImageError:
            return i, None

    bad = []
    if workers <= 1:
        results = map(one, range(len(items)))
    else:
        pool = ThreadPoolExecutor(max_workers=workers)
        results = pool.map(one, range(len(items)), chunksize=4)
    try:
        for i, array in results:
            if array is None:
                bad.append(items[i].impath)
            elif not bad:
                yield i, array
    finally:
        if workers > 1:
            pool.shutdown()
    _raise_unreadable(bad)


class DecodedImages(Dataset):
    """(image tensor, label) pairs of `items` from pixels decoded once (see the module docs)."""

    def __init__(self, items: Sequence[Datum], transform, workers: int = 0,
                 sizes: Sequence[tuple[int, int]] | None = None):
        self.items = list(items)
        self.transform = transform
        sizes = list(sizes) if sizes is not None else header_sizes(self.items)  # (h, w), read once
        offsets = np.cumsum([0] + [3 * h * w for h, w in sizes])
        # One buffer in shared memory: DataLoader workers read it without a copy.
        self.pixels = torch.empty(int(offsets[-1]), dtype=torch.uint8).share_memory_()
        self.offsets = offsets.tolist()
        self.shapes = sizes
        view = self.pixels.numpy()
        for i, array in _decode_all(self.items, workers):
            h, w = self.shapes[i]
            if array.shape != (h, w, 3):
                raise CorruptImageError(f"{self.items[i].impath} decoded to {array.shape}, its header says "
                                        f"{(h, w, 3)}; replace the file.")
            view[self.offsets[i]:self.offsets[i + 1]] = array.reshape(-1)

    def __len__(self):
        return len(self.items)

    def image(self, index: int) -> Image.Image:
        h, w = self.shapes[index]
        pixels = self.pixels.numpy()[self.offsets[index]:self.offsets[index + 1]].reshape(h, w, 3)
        return Image.fromarray(pixels, mode="RGB")

    def __getitem__(self, index: int):
        image = self.image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.items[index].label


def fits(items: Sequence[Datum], budget_gib: float, what: str, sizes=None) -> bool:
    """Whether decoding `items` (of header `sizes`, when known) stays within `budget_gib`; says
    so in one line when not."""
    need = sum(3 * h * w for h, w in (sizes if sizes is not None else header_sizes(items)))
    if need <= budget_gib * GIB:
        return True
    log.info("%s: %.1f GiB of decoded pixels exceed --image-cache-gb %.1f: decoding from the files instead",
             what, need / GIB, budget_gib)
    return False


# ------------------------------------------------------------------ test sets


class PreparedTestImages:
    """A test set after the test transform's geometry, uint8 [N, 3, H, W]; `preprocess` is the
    model's (an int: OpenAI CLIP's at that size)."""

    def __init__(self, items: Sequence[Datum], preprocess: Preprocess | int, workers: int = 0):
        self.preprocess = preprocess if isinstance(preprocess, Preprocess) else Preprocess(size=preprocess)
        geometry = self.preprocess.geometry()
        self.items = list(items)
        self.pixels = torch.empty((len(self.items), 3, *self.preprocess.size), dtype=torch.uint8)
        for i, hwc in _decode_all(self.items, workers, lambda im: np.array(geometry(im))):
            self.pixels[i] = torch.from_numpy(hwc).permute(2, 0, 1)
        self.labels = torch.tensor([d.label for d in self.items], dtype=torch.long)

    def __len__(self):
        return len(self.items)

    @property
    def nbytes(self) -> int:
        return self.pixels.numel()

    def batches(self, batch_size: int):
        for start in range(0, len(self.items), batch_size):
            yield self.pixels[start:start + batch_size], self.labels[start:start + batch_size]


    def normalized_batches(self, batch_size: int):
        """(what the test transform gives, labels) batch by batch."""
        for pixels, labels in self.batches(batch_size):
            yield self.preprocess.normalize(pixels), labels


def test_images_bytes(n: int, size) -> int:
    height, width = (size, size) if isinstance(size, int) else size
    return n * 3 * height * width
