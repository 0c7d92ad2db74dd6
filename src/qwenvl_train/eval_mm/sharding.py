"""Split the questions over torchrun's ranks, and bring the answers back to rank 0.

    torchrun --nproc_per_node 8 -m qwenvl_train eval --benchmark textvqa_val --data textvqa_val.jsonl ...

Each rank takes one contiguous shard; the shards' sizes differ by at most one (the first ``n % world`` ranks take
one more), and every question is in exactly one shard. The original's ``InferenceSampler`` split the same way but
its grounding loader's ``drop_last=True`` then dropped the tail of each shard; nothing is dropped here.

A single process (no ``WORLD_SIZE``, or 1) is rank 0 of 1 and needs no process group. A rank that fails ends the
run: torchrun stops the other ranks, so none waits forever at the final gather.
"""

from __future__ import annotations

import os
from typing import Any


def shard(total: int, world_size: int, rank: int) -> range:
    """The indices ``rank`` works on among ``total`` items split over ``world_size`` ranks (contiguous)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world size {world_size}")
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def launched_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_device() -> str:
    """This rank's device: ``cuda:LOCAL_RANK`` when there is a GPU, else ``cpu``."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


_joined_here = False  # whether init_distributed made the process group (then close_distributed ends it)


def init_distributed(device: str) -> tuple[int, int]:
    """``(rank, world_size)``, joining torchrun's process group first when launched by it (nccl on a GPU, gloo on
    CPU)."""
    global _joined_here
    import torch.distributed as dist

    if launched_world_size() <= 1:
        return 0, 1
    if not dist.is_initialized():
        if device.startswith("cuda"):
            import torch

            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        _joined_here = True
    return dist.get_rank(), dist.get_world_size()


def close_distributed() -> None:
    """Leave the process group :func:`init_distributed` made (one made by the caller is left alone)."""
    global _joined_here
    if _joined_here:
        import torch.distributed as dist

        dist.destroy_process_group()
        _joined_here = False


def gather_to_all(obj: Any, world_size: int) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if world_size <= 1:
        return [obj]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(world_size: int) -> None:
    """Wait for every rank (nothing in a single process)."""
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()
