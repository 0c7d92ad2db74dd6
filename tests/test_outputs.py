"""``qwenvl_train.outputs`` on its own: a regular file or a new path written atomically, a FIFO or a device (or a
symlink to one) written through in place, ``-`` on stdout, anything else one line and nothing replaced."""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dev_guard import entry
from qwenvl_train.errors import UserError
from qwenvl_train.outputs import (
    OutputError,
    check_output_folder,
    open_output,
    output_target,
    staged_folder,
    write_output,
    writes_to_stdout,
)


@contextmanager
def draining(fifo: Path) -> Iterator[list[bytes]]:
    """A reader thread that reads ``fifo`` to its end; the bytes are in the list once the block ends."""
    got: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as fh:
            got.append(fh.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    yield got
    reader.join(timeout=120)
    assert not reader.is_alive(), "nothing opened the FIFO for writing"


@contextmanager
def unix_socket(path: Path) -> Iterator[Path]:
    """A bound UNIX socket at ``path`` (a path that is neither a file, a folder nor a stream)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        yield path


def null_link(tmp_path: Path, name: str = "out") -> Path:
    """A symlink in ``tmp_path`` to ``/dev/null``."""
    link = tmp_path / name
    link.symlink_to("/dev/null")
    return link


def assert_null_link_intact(link: Path) -> None:
    assert link.is_symlink() and os.readlink(link) == "/dev/null"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_new_path_is_written_whole_with_ordinary_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.jsonl"  # the folder is made
    umask = os.umask(0o027)
    try:
        write_output(target, "a\nb\n")
    finally:
        os.umask(umask)
    assert target.read_bytes() == b"a\nb\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(target.parent) == ["out.jsonl"]  # no temporary file left


def test_a_regular_file_is_replaced_atomically_and_a_failed_write_keeps_it(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old\n")
    before = target.stat().st_ino
    with pytest.raises(RuntimeError), open_output(target) as fh:
        fh.write("half")
        raise RuntimeError("stopped while writing")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["out.json"]
    write_output(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert target.stat().st_ino != before  # a new file renamed over it, not rewritten in place


def test_a_full_disk_while_committing_is_one_line_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qwenvl_train.disk_full import is_disk_full

    target = tmp_path / "out.json"
    target.write_text("old\n")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError) as info:
        write_output(target, "new\n", "--out")
    assert str(info.value) == f"--out {target}: cannot be written (No space left on device)"
    assert is_disk_full(info.value)  # the cause is kept: training's saving() still says "disk full"
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["out.json"]


def test_a_symlink_to_a_regular_file_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("old\n")
    link = tmp_path / "link.json"
    link.symlink_to(real.name)
    write_output(link, "new\n")
    assert link.is_symlink() and os.readlink(link) == "real.json"
    assert real.read_text() == "new\n"


def test_a_fifo_is_written_through_and_stays_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert output_target(fifo) == "stream"
    with draining(fifo) as got:
        write_output(fifo, "one\ntwo\n")
    assert got == [b"one\ntwo\n"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert os.listdir(tmp_path) == ["pipe"]


def test_a_symlink_to_a_device_is_written_through(tmp_path: Path) -> None:
    link = null_link(tmp_path)
    before = entry("/dev/null")
    assert output_target(link) == "stream"
    write_output(link, "gone\n")
    assert_null_link_intact(link)
    assert entry("/dev/null") == before
    assert os.listdir(tmp_path) == ["out"]


def test_a_link_through_proc_is_a_stream_even_to_a_regular_file(tmp_path: Path) -> None:
    """``/dev/stdout`` (or a link of the user's to ``/proc/self/fd/N``) while the shell redirects into a file: the
    file is written through (appended), never replaced by a new one the shell's descriptor does not see."""
    redirected = tmp_path / "redirected.jsonl"
    with open(redirected, "w") as fh:
        fh.write("before\n")
        fh.flush()
        link = tmp_path / "my-stdout"
        link.symlink_to(f"/proc/self/fd/{fh.fileno()}")
        inode = redirected.stat().st_ino
        assert output_target(link) == "stream"
        write_output(link, "after\n")
    assert redirected.read_text() == "before\nafter\n" and redirected.stat().st_ino == inode
    assert link.is_symlink()


def test_dash_is_the_standard_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert output_target("-") == "stdout" and writes_to_stdout("-")
    write_output("-", '{"a": 1}\n')
    assert capsys.readouterr().out == '{"a": 1}\n'


@pytest.mark.parametrize("kind", ["directory", "socket", "symlink to a directory"])
def test_any_other_target_is_one_line_and_left_alone(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "target"
    said = {
        "directory": "a directory",
        "socket": "a socket",
        "symlink to a directory": "a directory (a symlink to it)",
    }[kind]
    folder = tmp_path / "folder"
    folder.mkdir()
    with unix_socket(tmp_path / "sock") as sock:
        if kind == "directory":
            target = folder
        elif kind == "socket":
            target = sock
        else:
            target.symlink_to(folder)
        before = entry(str(target))
        with pytest.raises(OutputError) as info:
            write_output(target, "x")
        assert isinstance(info.value, UserError)
        assert (
            str(info.value)
            == f"--out {target} is {said}, not a file: give a file to write (nothing was written)"[6:]
        )
        with pytest.raises(OutputError, match=rf"^--out {target} is "):
            output_target(target, "--out")
        assert entry(str(target)) == before
    assert os.listdir(folder) == []


def test_a_missing_dev_entry_is_refused() -> None:
    with pytest.raises(OutputError, match=r"^--out /dev/qwenvl-none: no such device; give a file to write$"):
        output_target("/dev/qwenvl-none", "--out")


def test_a_folder_target_must_be_a_folder(tmp_path: Path) -> None:
    check_output_folder(tmp_path)  # an existing folder
    check_output_folder(tmp_path / "new" / "deeper")  # a new one
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    file = tmp_path / "file"
    file.write_text("")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    link = null_link(tmp_path, "null")
    with unix_socket(tmp_path / "sock") as sock:
        for path, line in (
            (fifo, f"--report {fifo} is a FIFO, not a folder: give a folder to write into"),
            (file, f"--report {file} is a regular file, not a folder: give a folder to write into"),
            (sock, f"--report {sock} is a socket, not a folder: give a folder to write into"),
            (link, f"--report {link} is a character device (a symlink to it), not a folder: give a folder to "
                   "write into"),
            (dangling, f"--report {dangling} is a symlink to {tmp_path / 'nowhere'}, which does not exist: give "
                       "a folder"),
            (file / "below", f"--report {file / 'below'}: {file} is a regular file, not a folder"),
        ):  # fmt: skip
            with pytest.raises(OutputError) as info:
                check_output_folder(path, "--report")
            assert str(info.value) == line
    assert_null_link_intact(link)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_staged_folder_appears_whole_and_never_replaces_a_link(tmp_path: Path) -> None:
    out = tmp_path / "merged"
    with staged_folder(out, "--output") as folder:
        (folder / "config.json").write_text("{}")
        assert not out.exists()
    assert os.listdir(out) == ["config.json"]
    with pytest.raises(RuntimeError), staged_folder(tmp_path / "failed") as folder:
        raise RuntimeError("stopped")
    assert sorted(os.listdir(tmp_path)) == ["merged"]  # no staging folder left
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputError, match="which does not exist"), staged_folder(dangling, "--output"):
        pass
    assert dangling.is_symlink()
    with pytest.raises(OutputError, match=rf"^--output {out} already exists: choose a new one"):
        with staged_folder(out, "--output"):
            pass
