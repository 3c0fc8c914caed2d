"""Deterministic batching: independent of process count and of where a run restarts."""

import pytest
import torch

from glad.engine.sampling import GlobalBatchSampler, SeededItems, mix_seed


def test_ranks_partition_the_global_batch():
    one = GlobalBatchSampler(70, 8, seed=3)
    two = [GlobalBatchSampler(70, 8, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in [one, *two]:
        s.set_epoch(2)
    for full, a, b in zip(one, *two, strict=True):
        assert sorted(full) == sorted(a + b) and len(a) == len(b) == 4
    assert len(one) == 70 // 8  # partial last batch dropped


def test_resume_from_a_batch_gives_the_same_tail():
    s = GlobalBatchSampler(50, 4, seed=1)
    s.set_epoch(5)
    full = list(s)
    s.set_epoch(5, start_batch=7)
    assert list(s) == full[7:] and len(s) == len(full) - 7


def test_small_data_keeps_its_only_batch():
    s = GlobalBatchSampler(5, 32, seed=0)
    assert len(list(s)) == 1 and len(s) == 1


def test_seeded_items_are_reproducible_and_leave_global_rng_alone():
    class Noise(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(3)

    items = SeededItems(Noise(), seed=9)
    state = torch.get_rng_state()
    a, b = items[(1, 2)], items[(1, 2)]
    assert torch.equal(a, b) and not torch.equal(a, items[(2, 2)])
    assert torch.equal(state, torch.get_rng_state())
    assert mix_seed(1, 2) == mix_seed(1, 2) != mix_seed(2, 1)


def test_a_training_set_smaller_than_a_global_batch_over_ranks_is_refused():
    from glad.engine.sampling import GlobalBatchSampler

    with pytest.raises(ValueError, match=r"does not split evenly over 2 processes"):
        GlobalBatchSampler(3, 4, seed=1, rank=1, world_size=2)
    shares = [list(GlobalBatchSampler(4, 8, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    assert [len(s[0]) for s in shares] == [2, 2]  # an even split of a partial batch is fine
    one = GlobalBatchSampler(3, 4, seed=1)  # one process: a partial batch of all 3, as Dassl
    assert [len(b) for b in one] == [3]
