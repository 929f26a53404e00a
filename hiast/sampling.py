"""Iteration-addressed sampling: batch k is a pure function of (seed, k).

Every batch's image indices and every sample's augmentation seed depend only on the run's seed and the
iteration number, so a job stopped at iteration k and restarted from its checkpoint draws exactly the batches
an uninterrupted run would have drawn, whatever the number of DataLoader workers. With several GPUs, rank r
takes the items j of the global batch with j % world_size == r, so the global batch is the configured one.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch


def sample_seed(seed: int, iteration: int, slot: int) -> int:
    """The augmentation seed of item `slot` of batch `iteration` (63 bits, well mixed)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, iteration, slot, 0x5EED])
    high, low = (int(v) for v in state.generate_state(2, dtype=np.uint32))
    return ((high << 32) | low) & ((1 << 63) - 1)


class IterationBatchSampler(torch.utils.data.Sampler):
    """Yields, for iterations start..stop-1, lists of (dataset index, sample seed).

    Indices run through a fresh seeded permutation of the dataset per epoch, epochs concatenated, so every
    image is seen once per epoch; a batch may straddle two epochs.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start: int = 0, stop: int = 0,
                 rank: int = 0, world_size: int = 1):
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start, self.stop = start, stop
        self.rank, self.world_size = rank, world_size
        self._permutations: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) > 4:
                self._permutations.clear()
            self._permutations[epoch] = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch]).permutation(self.size)
        return self._permutations[epoch]

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        items = []
        for slot in range(self.rank, self.batch_size, self.world_size):
            position = iteration * self.batch_size + slot
            epoch, offset = divmod(position, self.size)
            items.append((int(self._permutation(epoch)[offset]), sample_seed(self.seed, iteration, slot)))
        return items

    def __iter__(self):
        for iteration in range(self.start, self.stop):
            yield self.batch(iteration)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


@contextmanager
def seeded(seed: int):
    """Run a block with torch's CPU generator seeded, restoring the caller's generator afterwards."""
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only (what fork_rng restores): torch.manual_seed would also seed every GPU, and
        # costs ~2 ms a call in a process without CUDA (it records a stack for the lazy CUDA init)
        torch.default_generator.manual_seed(seed)
        yield np.random.default_rng(seed)


class SeededItems(torch.utils.data.Dataset):
    """Wraps a dataset whose `item(index, rng)` draws its randomness from `rng` and torch's generator, so
    that `dataset[(index, seed)]` is reproducible."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        with seeded(seed) as rng:
            return self.dataset.item(index, rng)
