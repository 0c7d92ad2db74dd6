"""Padding-free packing (``--packing``): which samples share a micro-batch.

Each epoch the samples are shuffled (seed + epoch, so an epoch's order is the same after a resume) and cut, in
that order, into micro-batches whose token count stays within ``--packing_tokens``; a sample longer than the budget
is a micro-batch of its own. :class:`~qwenvl_train.data.collator.PackingCollator` then concatenates each one into
a single row. The lengths come from the dataset's scan, so no image is loaded to plan the batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


def pack_in_order(order: Sequence[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Cut ``order`` into consecutive groups of at most ``budget`` tokens (an over-long sample alone)."""
    packs: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index in order:
        n = int(lengths[index])
        if current and used + n > budget:
            packs.append(current)
            current, used = [], 0
        current.append(index)
        used += n
    if current:
        packs.append(current)
    return packs


class PackedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields lists of dataset indices, each list one packed micro-batch of at most ``budget`` tokens.

    Used as the DataLoader's ``batch_sampler``; under data parallelism accelerate deals the micro-batches out to
    the ranks. ``set_epoch`` (called by the Trainer) picks the epoch's shuffle.
    """

    def __init__(self, lengths: Sequence[int], budget: int, seed: int = 0) -> None:
        if budget < 1:
            raise ValueError(f"--packing_tokens must be positive, got {budget}")
        self.lengths = [int(n) for n in lengths]
        self.budget = budget
        self.seed = seed
        self.epoch = 0
        self._packs: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def packs(self) -> list[list[int]]:
        """This epoch's micro-batches (computed once per epoch)."""
        if self._packs is None or self._packs[0] != self.epoch:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(self.lengths), generator=generator).tolist()
            self._packs = (self.epoch, pack_in_order(order, self.lengths, self.budget))
        return self._packs[1]

    def __len__(self) -> int:
        return len(self.packs())

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.packs())
