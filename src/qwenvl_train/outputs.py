"""Writing a file or a folder the user named, without ever renaming over something that is not ours to replace.

Every writer of the product goes through here (``convert --out``, ``eval --out``, ``check-data --dump``, the
report folders, ``merge --output``, training's ``--output_dir``):

- a regular file or a new path is written atomically: a temporary file in the same folder, fsync, then
  :func:`os.replace` (an interrupted write never leaves half a file under the name), with the permissions of an
  ordinary new file (``0666`` less the umask). A symlink to a regular file is followed: the file it points at is
  replaced, the symlink stays;
- ``-`` is the standard output, and a character device or a FIFO (or a symlink to one, such as ``/dev/stdout``
  or ``/dev/null``) is a stream: opened for writing and written through in place, never replaced. A path under
  ``/dev`` or ``/proc`` is always such a stream (``--out /dev/stdout`` while the shell redirects the standard
  output to a file appends to that file instead of replacing it);
- anything else (a directory where a file is expected, a socket, a block device, a missing ``/dev`` entry, or a
  symlink to one of those) is an :class:`OutputError` naming it, and nothing is written or replaced.

Why: ``safetensors``/``tempfile``-style "write aside and rename" over ``/dev/stdout`` or ``/dev/full`` replaces the
device with a regular file, for every later process on the machine when run as root.

Standard library only; cheap to import.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal

from .errors import UserError

#: The path that means the standard output.
STDOUT = "-"
#: Folders whose entries are the system's, never replaced: a path under them is written through or refused.
SYSTEM_FOLDERS = ("/dev/", "/proc/")

Target = Literal["stdout", "stream", "file"]


class OutputError(UserError, OSError):
    """A file or folder the user named cannot be written as asked; one line naming it."""


def kind_of(mode: int) -> str:
    """What a non-regular ``st_mode`` is, in words (``a directory``, ``a socket``, ...)."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISREG, "a regular file"),
    ):
        if test(mode):
            return name
    return "a special file"


def _named(path: str | os.PathLike[str], what: str) -> str:
    return f"{what} {os.fspath(path)}" if what else os.fspath(path)


def output_target(path: str | os.PathLike[str], what: str = "") -> Target:
    """How ``path`` is written: ``stdout`` (it is ``-``), ``stream`` (written through in place) or ``file``
    (written atomically: a regular file, or a new path).

    Args:
        path: the path the user gave.
        what: the option that named it (``--out``), to start the error line.

    Raises:
        OutputError: any other kind of target.
    """
    text = os.fspath(path)
    if text == STDOUT:
        return "stdout"
    system = through_system_folder(text)
    link = " (a symlink to it)" if os.path.islink(text) else ""
    try:
        mode = os.stat(text).st_mode
    except FileNotFoundError:
        if system:
            raise OutputError(f"{_named(path, what)}: no such device; give a file to write") from None
        return "file"
    except OSError as exc:
        raise OutputError(f"{_named(path, what)}: cannot be written ({exc.strerror or exc})") from None
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or (system and stat.S_ISREG(mode)):
        return "stream"
    if stat.S_ISREG(mode):
        return "file"
    raise OutputError(
        f"{_named(path, what)} is {kind_of(mode)}{link}, not a file: give a file to write (nothing was written)"
    )


def through_system_folder(path: str | os.PathLike[str]) -> bool:
    """``path``, or a symlink on the way from it to its target, lies under ``/dev`` or ``/proc`` (a link to
    ``/proc/self/fd/1`` is the standard output whatever that is, never a file to replace)."""
    here = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on symlink hops
        if here.startswith(SYSTEM_FOLDERS):
            return True
        if not os.path.islink(here):
            return False
        here = os.path.abspath(os.path.join(os.path.dirname(here), os.readlink(here)))
    return False


def writes_to_stdout(path: str | os.PathLike[str] | None) -> bool:
    """``path`` is ``-`` or the file the standard output is (``/dev/stdout``, ``/proc/self/fd/1``): a command
    then prints its own lines (summary, table) on stderr instead."""
    if path is None:
        return False
    if os.fspath(path) == STDOUT:
        return True
    try:
        here, out = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no such path; a stdout without a descriptor (captured)
        return False
    return (here.st_dev, here.st_ino) == (out.st_dev, out.st_ino)


def ordinary_mode() -> int:
    """The permissions of an ordinary new file: ``0666`` less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def open_output(path: str | os.PathLike[str], what: str = "", *, binary: bool = False) -> Iterator[IO]:  # type: ignore[type-arg]
    """A file object to write ``path`` through, as the module docstring says; committed when the block ends.

    A regular file appears whole only when the block succeeds (an exception removes the temporary file and
    leaves what was there before). The standard output is flushed, not closed.

    Args:
        path: the path the user gave (``-``: the standard output).
        what: the option that named it, to start an error line.
        binary: bytes instead of UTF-8 text (with ``\\n`` line ends).

    Raises:
        OutputError: the target is not a file or stream, or its folder cannot be written.
    """
    target = output_target(path, what)
    if target == "stdout":
        handle = sys.stdout.buffer if binary else sys.stdout
        yield handle
        with _said(path, what):
            handle.flush()
        return
    text_args = {} if binary else {"encoding": "utf-8", "newline": "\n"}
    if target == "stream":  # append: never truncate what a shell redirection already holds
        with _said(path, what):
            handle = open(path, "ab" if binary else "a", **text_args)  # noqa: SIM115 - closed below
        try:
            yield handle
        except BaseException:
            with contextlib.suppress(OSError):
                handle.close()
            raise
        with _said(path, what):  # /dev/full: the buffered bytes meet ENOSPC here
            handle.close()
        return
    real = Path(os.path.realpath(path))  # a symlink to a file: replace the file, keep the link
    with _said(path, what):
        real.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".partial")
    handle = os.fdopen(fd, "wb" if binary else "w", **text_args)
    try:
        os.chmod(tmp, ordinary_mode())  # mkstemp makes it private
        yield handle
        with _said(path, what):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(OSError):
            handle.close()
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def _said(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """An ``OSError`` in the block as an :class:`OutputError` line naming ``path`` (chained: a full disk is still
    recognised as one)."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{_named(path, what)}: cannot be written ({exc.strerror or exc})") from exc


def write_output(path: str | os.PathLike[str], data: str | bytes, what: str = "") -> None:
    """Write ``data`` to ``path`` through :func:`open_output` (text as UTF-8)."""
    with open_output(path, what, binary=isinstance(data, bytes)) as handle:
        handle.write(data)


def check_output_folder(path: str | os.PathLike[str], what: str = "") -> None:
    """A folder the user named can be created or written into: it is a directory (or a symlink to one), or it
    does not exist and the nearest existing folder above it is a directory. Nothing is created.

    Raises:
        OutputError: it (or a path above it) exists and is not a directory, or it is a dangling symlink.
    """
    text = os.fspath(path)
    try:
        mode = os.stat(text).st_mode
    except (FileNotFoundError, NotADirectoryError):  # new, or a file above it (said below)
        if os.path.islink(text):
            raise OutputError(
                f"{_named(path, what)} is a symlink to {os.readlink(text)}, which does not exist: give a folder"
            ) from None
        above = Path(os.path.abspath(text)).parent
        while not os.path.lexists(above) and above != above.parent:
            above = above.parent
        if os.path.exists(above) and not os.path.isdir(above):
            raise OutputError(
                f"{_named(path, what)}: {above} is {kind_of(os.stat(above).st_mode)}, not a folder"
            ) from None
        return
    except OSError as exc:
        raise OutputError(f"{_named(path, what)}: cannot be used ({exc.strerror or exc})") from None
    if not stat.S_ISDIR(mode):
        link = " (a symlink to it)" if os.path.islink(text) else ""
        raise OutputError(
            f"{_named(path, what)} is {kind_of(mode)}{link}, not a folder: give a folder to write into"
        )


@contextmanager
def staged_folder(output: str | os.PathLike[str], what: str = "") -> Iterator[Path]:
    """A new hidden folder beside ``output``, renamed to ``output`` when the block succeeds, removed otherwise.

    ``output`` must not exist (not even as a dangling symlink): the rename would replace an empty folder or the
    link. A process killed outright (SIGKILL) leaves the ``.NAME.partial-*`` folder behind, never ``output``.

    Raises:
        OutputError: ``output`` exists, or a path above it is not a folder.
    """
    output = Path(output)
    check_output_folder(output, what)
    if os.path.lexists(output):
        raise OutputError(
            f"{_named(output, what)} already exists: choose a new one (nothing is written over it)"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        os.rename(staging, output)  # atomic on one file system; refuses to replace a non-empty folder
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
