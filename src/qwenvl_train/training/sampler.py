"""Which samples make up each training micro-batch, in an order that depends only on the seed and the epoch, so a
resumed run sees the same batches as an uninterrupted one.

Length grouping (``--train_sampling_strategy group_by_length``): :class:`EpochSeededSampler` draws the order of
:func:`qwenvl_train.data.dataset.length_grouped_sampler` from seed + epoch, with the lengths the dataset computed
(no image is loaded to measure a sample).

Padding-free packing (``--packing``): each epoch the samples are shuffled (seed + epoch) and packed into
micro-batches of at most ``--packing_tokens`` tokens, best fit within windows of :data:`PACK_WINDOW` shuffled
samples: longest first, each into the open micro-batch it fills most tightly, a micro-batch staying open across
windows while some sample could still fit. The micro-batches are then shuffled. A sample longer than the budget
is a micro-batch of its own. LLaMA-Factory and ms-swift also bin-pack by length; windows keep the make-up of the
micro-batches different each epoch, where one sort of the whole epoch would group the same samples every time.
Cutting the shuffled order as it comes leaves 14-23% of each budget empty on long-tailed lengths, hence more
and smaller steps; best fit leaves under 1% (``benchmarks/packing_fill.py``).
:class:`~qwenvl_train.data.collator.PackingCollator` then concatenates each one into a single row. The lengths
come from the dataset's scan, so no image is loaded to plan the batches.
"""

from __future__ import annotations

import bisect
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


#: Shuffled samples packed together: enough for a tight fit, few enough that each epoch's plan differs.
PACK_WINDOW = 1024


def pack_best_fit(
    order: Sequence[int], lengths: Sequence[int], budget: int, window: int = PACK_WINDOW
) -> list[list[int]]:
    """Pack the samples of ``order`` into groups of at most ``budget`` tokens, window by window (``window``
    consecutive samples of ``order``): within a window longest first (ties in ``order``), each into the open group
    with the least room that still holds it, else a new group; a sample over the budget is a group of its own.
    Groups stay open across windows until no sample is short enough for the room they have left.

    Returns:
        The groups in order of creation, each listing its samples in ``order``'s order.
    """
    rank = {index: k for k, index in enumerate(order)}
    shortest = min((int(lengths[i]) for i in order), default=1)
    groups: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (tokens left, group number), ascending: best fit by bisection
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        for index in sorted(chunk, key=lambda i: -int(lengths[i])):  # stable: ties stay in ``order``'s order
            n = int(lengths[index])
            at = bisect.bisect_left(room, (n, -1))
            if n <= budget and at < len(room):
                left, k = room.pop(at)
            else:
                groups.append([])
                left, k = budget, len(groups) - 1
            groups[k].append(index)
            if left - n >= shortest:
                bisect.insort(room, (left - n, k))
    return [sorted(group, key=rank.__getitem__) for group in groups]


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
            packs = pack_best_fit(order, self.lengths, self.budget)
            shuffled = torch.randperm(len(packs), generator=generator).tolist()
            self._packs = (self.epoch, [packs[k] for k in shuffled])
        return self._packs[1]

    def __len__(self) -> int:
        return len(self.packs())

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.packs())
