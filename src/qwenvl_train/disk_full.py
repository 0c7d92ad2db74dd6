"""A disk that fills up while a run saves: one line instead of a traceback, and nothing lost without a word.

Every save of a run (a checkpoint, the final save, a merge) writes aside first (a hidden folder) and moves into place
only once complete, so a save cut short by a full disk leaves nothing that looks finished. What :func:`saving` adds
is the ending: the error becomes :class:`DiskFullError`, one line naming the folder, the bytes the save needs and
the bytes free, and where the trained weights are (the last complete checkpoint that holds them), or that none holds
them.

A full disk is recognised whatever raised it: ``OSError`` with ``ENOSPC`` / ``EDQUOT`` (Python's own writes),
safetensors' ``SafetensorError`` ("No space left on device (os error 28)") and torch's ``RuntimeError``
("PytorchStreamWriter failed writing file ...: file write failed"), also when chained.

A base module (the standard library only), so that every layer that saves (training, ``export``'s merge) uses it
without reaching into another.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import UserError

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: How libraries that do not raise OSError say it (safetensors' Rust errors, torch's stream writer).
NO_SPACE_TEXTS = (
    "No space left on device",
    "Disk quota exceeded",
    "os error 28",
    "os error 122",
    "file write failed",
)


class DiskFullError(UserError, OSError):
    """A save ran out of disk space; the message is one line (see the module docstring). An ``OSError`` with
    ``ENOSPC``, as what it replaces; every rank that writes knows of it, so each prints its own."""

    every_rank = True

    def __init__(self, line: str) -> None:
        OSError.__init__(self, errno.ENOSPC, line)

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(exc: BaseException) -> bool:
    """``exc`` (or an exception it was raised from or while handling) says the disk or the quota is full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in NO_SPACE_ERRNOS:
            return True
        if any(text in str(current) for text in NO_SPACE_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False


def format_bytes(n: int) -> str:
    """1536 -> '1.5 KB' (powers of 1024)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def free_bytes(folder: str | Path) -> int:
    """Free bytes on the file system of ``folder`` (or of its nearest existing parent)."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


def disk_full_line(folder: str | Path, what: str, needed: int | None, after: str) -> str:
    """The line a save that ran out of space ends with.

    Args:
        folder: where it was saving.
        what: what it was saving ("checkpoint-40", "the final adapter", "the merged model").
        needed: bytes the save needs (None: unknown).
        after: where the work is now and what to do (:func:`resume_advice`, or a command's own).
    """
    needs = f"it needs about {format_bytes(needed)}, " if needed else ""
    return (
        f"{folder}: No space left on device while saving {what} ({needs}{format_bytes(free_bytes(folder))} free); "
        "what was "
        f"half-written is not marked complete and is never loaded or resumed from; {after}"
    )


def resume_advice(checkpoint: str | None) -> str:
    """Where the trained weights are, for a training run: ``checkpoint`` (its last complete one), or none."""
    if checkpoint:
        return (
            f"the trained weights are in {checkpoint} (the last complete checkpoint): free some space and resume "
            "with --resume_from_checkpoint auto"
        )
    return "no complete checkpoint holds trained weights: free some space and train again"


@contextlib.contextmanager
def saving(
    folder: str | Path,
    what: str | Callable[[], str],
    needed: int | None | Callable[[], int | None] = None,
    after: Callable[[], str] = lambda: resume_advice(None),
) -> Iterator[None]:
    """Run a save; a full disk becomes :class:`DiskFullError`. ``what``, ``needed`` and ``after`` (see
    :func:`disk_full_line`) may be functions, asked only then. Any other error passes through unchanged."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, DiskFullError) or not is_disk_full(exc):
            raise
        line = disk_full_line(
            folder,
            what() if callable(what) else what,
            needed() if callable(needed) else needed,
            after(),
        )
        raise DiskFullError(line) from None
