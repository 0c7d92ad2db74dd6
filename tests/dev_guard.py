"""What the ``/dev`` entries a test could touch are, recorded before the session and compared after it.

A test that renames over ``/dev/full`` or ``/dev/stdout`` (``safetensors``' "write aside and rename" does, as
root) breaks the machine for every later process; ``conftest.py`` fails the session naming the entry.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from typing import NamedTuple

#: The entries the suite could touch: what tests and the product open by name.
WATCHED = ("/dev/full", "/dev/null", "/dev/zero", "/dev/stdout", "/dev/stderr", "/dev/stdin", "/dev/random",
           "/dev/urandom", "/dev/tty")  # fmt: skip


class Entry(NamedTuple):
    """One ``/dev`` entry as ``lstat`` sees it (the entry itself, not what a symlink points at)."""

    kind: str  # "character device", "symlink", "regular file", ..., "missing"
    rdev: tuple[int, int] | None  # (major, minor) of a device
    target: str | None  # a symlink's target


MISSING = Entry("missing", None, None)


def kind_of(mode: int) -> str:
    """The type of an ``st_mode`` in words."""
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISLNK, "symlink"), (stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket")):  # fmt: skip
        if test(mode):
            return name
    return "special file"


def entry(path: str) -> Entry:
    """What ``path`` is now."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return MISSING
    device = stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
    return Entry(
        kind_of(st.st_mode),
        (os.major(st.st_rdev), os.minor(st.st_rdev)) if device else None,
        os.readlink(path) if stat.S_ISLNK(st.st_mode) else None,
    )


def record(paths: Iterable[str] = WATCHED) -> dict[str, Entry]:
    """Every path's :class:`Entry`."""
    return {path: entry(path) for path in paths}


def describe(e: Entry) -> str:
    """An entry in words: ``character device 1:7``, ``symlink to /proc/self/fd/1``, ``regular file``."""
    if e.rdev is not None:
        return f"{e.kind} {e.rdev[0]}:{e.rdev[1]}"
    if e.target is not None:
        return f"{e.kind} to {e.target}"
    return e.kind


def changes(before: Mapping[str, Entry], after: Mapping[str, Entry]) -> list[str]:
    """One line per entry that differs: ``/dev/full was character device 1:7, is now regular file``."""
    now = {path: after.get(path, MISSING) for path in before}
    return [
        f"{path} was {describe(was)}, is now {describe(now[path])}"
        for path, was in before.items()
        if now[path] != was
    ]
