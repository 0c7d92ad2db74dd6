"""Errors the product knows, and how a command ends on one: one clear line on stderr, exit status 1.

Every error class a user can fix (data, preparation, vocabulary, configuration, checkpoint layout) derives from
:class:`UserError`; the command-line entry points catch it (:func:`run_reporting`). The traceback is shown only
with ``QWENVL_TRAIN_DEBUG=1``. Under torchrun every rank hits the same error, so only rank 0 prints it, unless
the error happened on one rank only (:attr:`UserError.every_rank`). Cheap to import.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

DEBUG_ENV = "QWENVL_TRAIN_DEBUG"
PREFIX = "error: "


class UserError(Exception):
    """An error the user can fix; its message is one line that says what is wrong and what to do.

    Attributes:
        every_rank: print it on every rank (an error only the rank that hit it knows of), not just rank 0.
    """

    every_rank = False

    @property
    def line(self) -> str:
        """The one line printed for it."""
        return str(self) or type(self).__name__


class ConfigurationError(UserError, ValueError):
    """A bad option or combination of options (command line, ``--config`` file, environment)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used as it is laid out (missing files, undecidable kind, ...)."""


def is_debug() -> bool:
    """True with ``QWENVL_TRAIN_DEBUG=1``: errors show their traceback."""
    return os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes", "on")


def is_rank_zero() -> bool:
    """This process is rank 0 of a distributed run, or not distributed at all."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def report(exc: BaseException, prefix: str = PREFIX) -> None:
    """Print ``exc`` as one line (with the traceback under ``QWENVL_TRAIN_DEBUG=1``) on the rank it belongs to."""
    if not (is_rank_zero() or getattr(exc, "every_rank", False)):
        return
    if is_debug():
        traceback.print_exception(exc, file=sys.stderr)
    text = getattr(exc, "line", None) or str(exc) or type(exc).__name__
    end_progress_bars()
    print(prefix + text, file=sys.stderr, flush=True)


def end_progress_bars() -> None:
    """Close the progress bars still open (an error raised while the DataLoader ran leaves the Trainer's bar open
    with the cursor at its end), so that what is printed next starts a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or ()):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - a bar that cannot be closed must not hide the error being reported
            pass


def run_reporting(
    command: Callable[..., Any], *args: Any, known: tuple[type[BaseException], ...] = (), prefix: str = PREFIX
) -> int:
    """Run ``command(*args)``; a :class:`UserError` (or one of ``known``) becomes one line and exit status 1.

    Returns:
        The command's exit status (None counts as 0), or 1 after an error the product knows.
    """
    try:
        return int(command(*args) or 0)
    except (UserError, *known) as exc:
        report(exc, prefix)
        return finish(1)


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
