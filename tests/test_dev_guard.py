"""The session check of ``conftest.py`` (``dev_guard``): what it records of an entry, and the lines it fails with."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from dev_guard import Entry, changes, entry, record

FULL = Entry("character device", (1, 7), None)
STDOUT = Entry("symlink", None, "/proc/self/fd/1")


def test_an_unchanged_dev_gives_no_line() -> None:
    before = {"/dev/full": FULL, "/dev/stdout": STDOUT, "/dev/tty": Entry("missing", None, None)}
    assert changes(before, dict(before)) == []


def test_each_replaced_entry_is_one_line_naming_it() -> None:
    before = {"/dev/full": FULL, "/dev/stdout": STDOUT, "/dev/null": Entry("character device", (1, 3), None)}
    after = {
        "/dev/full": Entry("regular file", None, None),  # save_file renamed a temporary file over it
        "/dev/stdout": Entry("symlink", None, "/tmp/elsewhere"),
        "/dev/null": Entry("character device", (1, 3), None),
    }
    assert changes(before, after) == [
        "/dev/full was character device 1:7, is now regular file",
        "/dev/stdout was symlink to /proc/self/fd/1, is now symlink to /tmp/elsewhere",
    ]
    assert changes({"/dev/full": FULL}, {}) == ["/dev/full was character device 1:7, is now missing"]
    assert changes({"/dev/full": FULL}, {"/dev/full": Entry("character device", (1, 8), None)}) == [
        "/dev/full was character device 1:7, is now character device 1:8"
    ]


def test_an_entry_is_what_lstat_sees(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to("/dev/null")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        assert entry(str(tmp_path / "sock")) == Entry("socket", None, None)
    assert entry(str(tmp_path / "file")) == Entry("regular file", None, None)
    assert entry(str(tmp_path / "fifo")) == Entry("FIFO", None, None)
    assert entry(str(tmp_path / "link")) == Entry("symlink", None, "/dev/null")  # the link, not /dev/null
    assert entry(str(tmp_path)) == Entry("directory", None, None)
    assert entry(str(tmp_path / "none")) == Entry("missing", None, None)


def test_dev_null_is_recorded_as_the_device_it_is() -> None:
    st = os.stat("/dev/null")
    if not stat.S_ISCHR(st.st_mode):
        pytest.skip("/dev/null is not a character device here")
    assert record(["/dev/null"]) == {
        "/dev/null": Entry("character device", (os.major(st.st_rdev), os.minor(st.st_rdev)), None)
    }
