import numpy as np
import pytest
import torch

from hiast.sampling import IterationBatchSampler, SeededItems, sample_seed, seeded


def test_epochs_are_permutations_and_batches_straddle():
    sampler = IterationBatchSampler(size=5, batch_size=2, seed=3, start=0, stop=5)
    indices = [i for batch in sampler for i, _ in batch]
    assert len(indices) == 10
    assert sorted(indices[:5]) == list(range(5)) and sorted(indices[5:]) == list(range(5))


def test_batch_is_a_function_of_seed_and_iteration():
    full = list(IterationBatchSampler(7, 3, seed=11, start=0, stop=6))
    resumed = list(IterationBatchSampler(7, 3, seed=11, start=4, stop=6))
    assert resumed == full[4:]
    other = list(IterationBatchSampler(7, 3, seed=12, start=0, stop=6))
    assert other != full
    assert len(IterationBatchSampler(7, 3, seed=11, start=4, stop=6)) == 2


def test_ranks_split_the_global_batch():
    whole = IterationBatchSampler(10, 4, seed=0).batch(2)
    parts = [IterationBatchSampler(10, 4, seed=0, rank=r, world_size=2).batch(2) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(whole)
    with pytest.raises(ValueError, match="not divisible"):
        IterationBatchSampler(10, 3, seed=0, world_size=2)
    with pytest.raises(ValueError, match="empty"):
        IterationBatchSampler(0, 3, seed=0)


def test_sample_seeds_differ_and_fit_63_bits():
    seeds = {sample_seed(0, it, slot) for it in range(50) for slot in range(4)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)


def test_seeded_restores_the_callers_generator():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with seeded(123) as rng:
        inside = torch.rand(2)
        assert isinstance(rng, np.random.Generator)
    assert torch.equal(torch.rand(3), expected)
    with seeded(123):
        assert torch.equal(torch.rand(2), inside)


class Noisy:
    def __len__(self):
        return 4

    def item(self, index, rng):
        return {"index": index, "torch": torch.rand(1), "numpy": rng.random()}


def test_seeded_items_are_reproducible():
    data = SeededItems(Noisy())
    a, b = data[(2, 99)], data[(2, 99)]
    assert torch.equal(a["torch"], b["torch"]) and a["numpy"] == b["numpy"]
    assert data[(2, 100)]["numpy"] != a["numpy"]
