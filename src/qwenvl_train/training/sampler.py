"""Which samples make up each training micro-batch, in an order that depends only on the seed and the epoch, so a
resumed run sees the same batches as an uninterrupted one.

Length grouping (``--train_sampling_strategy group_by_length``): :class:`EpochSeededSampler` draws the order of
:func:`qwenvl_train.data.dataset.length_grouped_sampler` from seed + epoch, with the lengths the dataset computed
(no image is loaded to measure a sample).

Padding-free packing (``--packing``): each epoch the samples are shuffled (seed + epoch) and cut, in that order,
into micro-batches whose token count stays within ``--packing_tokens``; a sample longer than the budget is a
micro-batch of its own. :class:`~qwenvl_train.data.collator.PackingCollator` then concatenates each one into
a single row. The lengths come from the dataset's scan, so no image is loaded to plan the batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch


class EpochSeededSampler(torch.utils.data.Sampler[int]):
    """Wraps a sampler factory so that epoch ``e`` always draws the same order (seed + e), whatever RNG calls
    happened before: a resumed run replays exactly the order of an uninterrupted one."""

    def __init__(self, make_sampler: Any, length: int, seed: int) -> None:
        self.make_sampler = make_sampler
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return iter(self.make_sampler(generator))


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
