"""Data given on purpose as a stream: ``-`` or ``/dev/stdin`` reads the standard input once, into a spooled file
that the scan then reads like any other (so the cache keys it by its content), named ``<stdin>`` in every message.

Any other file that is not a regular file (a FIFO, a device, a socket) is refused before it is opened (see
:mod:`..filekinds`). A standard input that is a terminal is refused too, saying how to pipe data in. The stream is
read as JSON Lines (a JSON list is read too, with a note), and images named relatively are found from the current
folder.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, BinaryIO

STREAM_NAMES = ("-", "/dev/stdin")
STDIN = "<stdin>"
_BLOCK = 1 << 20


class _Spooled:
    """The standard input as read: the file holding it and its fingerprint, or why it could not be read."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.size = 0
        self.sha256 = ""
        self.refused: str | None = None


_stdin: _Spooled | None = None


def is_stream(name: str) -> bool:
    """``name`` is the standard input given on purpose (as written, or as named once spooled)."""
    return name in STREAM_NAMES or name == STDIN


def take_streams(files: Sequence[str]) -> list[str]:
    """``files`` with the standard input (``-``, ``/dev/stdin``) read once and named :data:`STDIN`."""
    out = []
    for file in files:
        if file in STREAM_NAMES:
            _spool_stdin()
            file = STDIN
        out.append(file)
    return out


def _spool_stdin(source: BinaryIO | None = None) -> _Spooled:
    global _stdin
    if _stdin is not None:
        return _stdin
    spooled = _stdin = _Spooled()
    stream = source or sys.stdin.buffer
    if stream.isatty():
        spooled.refused = (
            "is a terminal: pipe the data in (cat data.jsonl | qwenvl-train check-data -) or name the file"
        )
        return spooled
    fd, path = tempfile.mkstemp(prefix="qwenvl-stdin-", suffix=".jsonl")
    atexit.register(_forget, path, os.getpid())
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            while block := stream.read(_BLOCK):
                digest.update(block)
                out.write(block)
                spooled.size += len(block)
    except OSError as exc:
        spooled.refused = f"cannot read the standard input ({exc.strerror or exc})"
        return spooled
    spooled.path, spooled.sha256 = path, digest.hexdigest()
    return spooled


def _forget(path: str, owner: int) -> None:
    if os.getpid() == owner:  # not from a forked process
        with contextlib.suppress(OSError):
            os.unlink(path)


def source(name: str) -> str:
    """The file to open for the data file ``name`` (the spooled copy for the standard input)."""
    if name == STDIN and _stdin is not None and _stdin.path is not None:
        return _stdin.path
    return name


def refusal(name: str) -> str | None:
    """Why the stream ``name`` cannot be read (a terminal, a read error), else None."""
    if name == STDIN:
        return "was not read" if _stdin is None else _stdin.refused
    return None


def fingerprint(name: str) -> dict[str, Any] | None:
    """What identifies the stream's content (for the scan cache): its size and sha256; None for a file."""
    if name != STDIN:
        return None
    if _stdin is None or _stdin.path is None:
        return {"path": name, "abspath": name, "stream": True, "unreadable": refusal(name)}
    return {"path": name, "abspath": name, "stream": True, "size": _stdin.size, "sha256": _stdin.sha256}
