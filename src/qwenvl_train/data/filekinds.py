"""What kind of file a path is, before anything opens it: a named pipe (FIFO), a device or a socket blocks or
never ends when read, so data files and images that are not regular files are refused with one line instead.
Cheap to import."""

from __future__ import annotations

import os
import stat

_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def special_kind(mode: int) -> str | None:
    """What a file of ``st_mode`` ``mode`` is when it is neither a regular file nor a folder, else None."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def not_regular(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is when it exists and is a special file (following links), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return special_kind(mode)
