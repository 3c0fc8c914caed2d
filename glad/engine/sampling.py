"""Deterministic batches: what a step sees depends only on (seed, epoch, batch), not on
worker count, process count or where a resumed run restarted.

Each epoch draws one global permutation from (seed, epoch); global batch b is its
b-th slice, and rank r of N takes every N-th item of it, so N processes see the
same global batch as one process. Each item's augmentation is seeded from
(seed, epoch, index), so a sample looks the same wherever it is loaded.
"""

from __future__ import annotations

import hashlib

import torch
from torch.utils.data import Dataset, Sampler


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python versions."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class SeededItems(Dataset):
    """Wraps a dataset indexed by (epoch, index); seeds torch's RNG per item, then restores it."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.seed, epoch, index))
            return self.dataset[index]


class GlobalBatchSampler(Sampler):
    """Yields this rank's share of each global batch as (epoch, index) keys for SeededItems."""

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"--batch-size {batch_size} must be divisible by the number of processes "
                             f"({world_size}): it is the global batch, split evenly across processes")
        if world_size > 1 and num_items < batch_size and num_items % world_size:
            # the one partial global batch would split unevenly (or leave a rank empty): DDP's mean
            # of the ranks' means would then not be one process's mean over the batch
            raise ValueError(f"the training set ({num_items} images) is smaller than one global batch "
                             f"(--batch-size {batch_size}) and does not split evenly over {world_size} processes; "
                             f"train in one process, or on a multiple of {world_size} images")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        # As Dassl: drop the last partial batch, unless the data is smaller than one batch.
        self.drop_last = num_items >= batch_size
        self.epoch, self.start = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        if self.drop_last:
            return self.num_items // self.batch_size
        return -(-self.num_items // self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch

    def __len__(self):
        return self.batches_per_epoch - self.start

    def __iter__(self):
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_items, generator=generator).tolist()
        for b in range(self.start, self.batches_per_epoch):
            batch = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(self.epoch, i) for i in batch[self.rank::self.world_size]]
