"""Errors the product knows, and how a command ends on one: one clear line on stderr, exit status 1.

Every error class a user can fix (data, preparation, vocabulary, configuration, checkpoint layout) derives from
:class:`UserError`; one place catches it: :func:`qwenvl_train.cli.main` (and ``train``'s own entry point), both
through :func:`run_reporting`. Nothing below catches it to print it. The traceback is shown only
with ``QWENVL_TRAIN_DEBUG=1``. Under torchrun every rank hits the same error, so only rank 0 prints it, unless
the error happened on one rank only (:attr:`UserError.every_rank`). Cheap to import.

Ending a process (leaving torch.distributed, ending a rank started by a launcher) is training's concern, in
:mod:`qwenvl_train.training.distributed`; :func:`run_reporting` only reports and returns the exit status.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

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
    command: Callable[..., Any],
    *args: Any,
    known: tuple[type[BaseException], ...] = (),
    prefix: str = PREFIX,
    ending: Callable[[int], int] | None = None,
) -> int:
    """Run ``command(*args)``; a :class:`UserError` (or one of ``known``) becomes one line and exit status 1.

    Args:
        ending: how the command ends after such an error, given the status 1 (training passes
            :func:`qwenvl_train.training.distributed.finish`, which leaves the process group and ends a rank
            started by a launcher); by default the status is returned.

    Returns:
        The command's exit status (None counts as 0), or 1 after an error the product knows.
    """
    try:
        return int(command(*args) or 0)
    except (UserError, *known) as exc:
        report(exc, prefix)
        return 1 if ending is None else ending(1)
