"""A distributed run's beginning and end: the set-up needed before the model loads, the rule that every rank runs
the vision tower at every step, leaving the process group, and how a rank started by a launcher ends.

Cheap to import (torch is imported inside the functions that need it): :func:`end_process` is also what a test
script imports on its own.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from torch import nn
    from transformers import TrainingArguments


def setup_distributed(args: TrainingArguments) -> None:
    """Everything that must happen before the model is loaded in a distributed run.

    - ZeRO-3 partitions the weights while ``from_pretrained`` builds the model, which needs the process group.
    - FSDP on a machine without GPU: accelerate would silently fall back to DDP; mark the state multi-GPU so that
      FSDP2 really shards (what lets the launchers and tests run FSDP on CPU).
    """
    import torch

    _ = args.device  # initializes torch.distributed under torchrun
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        import deepspeed

        backend = args.ddp_backend or ("nccl" if torch.cuda.is_available() else "gloo")
        deepspeed.init_distributed(dist_backend=backend)
    if args.fsdp and not torch.cuda.is_available():
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType

        PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU


def run_vision_every_step(model: nn.Module) -> None:
    """Make the model run its vision tower at every step, on a blank image when the batch has none.

    ZeRO-3 and FSDP gather each module's shards collectively, in the order modules run (ZeRO-3 replays the order
    it recorded, forward and backward), and ZeRO-2 reduces gradients in buckets as they become ready: a text-only
    batch on one rank next to an image batch on another would have the ranks call different collectives and hang
    or crash. The model does it itself (``QwenVLModel.set_vision_every_step``), inside its image splice, so the
    modules run in the same order, forward and backward, with or without images.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.transformer.set_vision_every_step(True)


def finish(status: int, barrier: bool = False) -> int:
    """How a command ends: leave the process group (after a barrier, with ``barrier``); a rank started by a
    launcher then ends its process here with ``status`` (:func:`end_process`), anything else gets ``status``
    back."""
    if leave_process_group(barrier) and launched_rank():
        end_process(status)
    return status


def leave_process_group(barrier: bool = False) -> int:
    """Leave torch.distributed when it was joined: no "process group not destroyed" warning. With ``barrier`` the
    ranks first meet, so none tears down its communicators while another is still in a collective (the end of a
    ZeRO-3 save, for instance).

    Returns:
        The size of the world it left (0 when no process group was initialized).
    """
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return 0
    world = dist.get_world_size()
    if barrier:
        dist.barrier()
    dist.destroy_process_group()
    return world


def launched_rank() -> bool:
    """This process is one rank started by a launcher (torchrun, the deepspeed launcher: ``RANK`` is set), not a
    program that called the product's functions itself."""
    return "RANK" in os.environ


def end_process(status: int) -> NoReturn:
    """End this process now with ``status``, without the interpreter's finalization: what a rank of a distributed
    run does once it has finished (and left its process group).

    Why: objects that hold communication work (DeepSpeed's ZeRO-3 handles, gloo's work queues, the process groups
    they reference) are otherwise freed while the interpreter tears itself down; a gloo thread that then drops a
    tensor needs the GIL, which no longer exists, and the C++ runtime aborts the rank (SIGABRT, "terminate called
    without an active exception"), so torchrun reports a run that finished and saved as failed. Everything a
    normal exit does before finalization still happens here, in the same order: non-daemon threads are joined,
    the ``atexit`` handlers run (logging, wandb, temporary folders, DataLoader workers), stdout and stderr are
    flushed. Only the teardown of C++ objects is skipped; the operating system reclaims them.
    """
    # The interpreter's own sequence: threading's exit hooks (executors told to stop) and the join of non-daemon
    # threads, then the atexit handlers.
    shutdown_threads = getattr(threading, "_shutdown", None)
    if shutdown_threads is not None:
        shutdown_threads()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can be written anyway
            pass
    os._exit(status)
